"""What every verb module of the CLI shares: the one-line argparse errors, --debug / --set options, count types
and the ``--image / --audio / --text / --input`` sample of predict and explain. Imports nothing heavy (torch is
loaded by a verb's ``run``, after the thread policy is set)."""

from __future__ import annotations

import argparse


def add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=3 --set model.fusion.name=gated (repeatable)",
    )


def add_processor_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a processor option of the saved model, e.g. --set model.modalities.image.processor."
        "max_pixels=100000000 (repeatable; other settings are fixed by the weights)",
    )


def add_debug(parser: argparse.ArgumentParser, default: object = argparse.SUPPRESS) -> None:
    # On every verb too (`polymodal train x.yaml --debug`); SUPPRESS keeps a verb from resetting the global flag.
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show the full traceback of an error (also: POLYMODAL_DEBUG=1)")


def at_least(minimum: int):
    """argparse type: an integer >= ``minimum`` (a bad value is a one-line usage error naming the option)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


positive = at_least(1)  # the type of counts (--top, --limit, --port, ...)


class OneLineErrors(argparse.ArgumentParser):
    """Usage errors as one line, like every other error of the CLI (the usage itself is one --help away)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # `--backend` must not silently mean `--backend-option`
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class VerbParser(OneLineErrors):
    """Every verb's parser takes --debug as well."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        add_debug(self)


def add_sample_inputs(parser: argparse.ArgumentParser) -> None:
    """--image / --audio / --text / --input NAME=VALUE (predict, explain): read by :func:`sample_from_args`."""
    parser.add_argument("--image", default=None, help="image file")
    parser.add_argument("--audio", default=None, help="audio file")
    parser.add_argument("--text", default=None, help="text string")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=VALUE", help="modality by name")


def sample_from_args(args: argparse.Namespace) -> dict[str, str]:
    """{modality: raw input} from --image / --audio / --text / --input NAME=VALUE (predict, explain)."""
    sample = {name: value for name, value in (("image", args.image), ("audio", args.audio), ("text", args.text)) if value}
    for item in args.input:
        if "=" not in item:
            raise ValueError(f"--input {item!r} must look like NAME=VALUE")
        name, value = item.split("=", 1)
        sample[name] = value
    if not sample:
        raise ValueError("give at least one input: --image FILE, --audio FILE, --text STRING or --input NAME=VALUE")
    return sample
