"""The `polymodal` command line: demo, train, eval, predict, list, export-data, retrieve, bench, serve,
export, compress, explain.

Errors: an expected error (any :class:`~polymodal.errors.PolymodalError`, and the ValueError / OSError / KeyError a
bad input raises) is printed as ONE line, ``polymodal VERB: error: <cause>``, exit status 2 (or the error's own
``exit_code``: 130 for a run stopped by Ctrl-C). ``polymodal --debug VERB ...`` (or POLYMODAL_DEBUG=1) shows the
traceback instead. polymodal's own warnings are one line too: ``polymodal VERB: warning: <what and what to do>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from .threads import configure_cli_process

# OpenMP reads its wait policy once, when torch loads: set it before anything below imports torch.
configure_cli_process()

from .config import ConfigError  # noqa: E402
from .errors import PolymodalError  # noqa: E402


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=3 --set model.fusion.name=gated (repeatable)",
    )


def _add_processor_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a processor option of the saved model, e.g. --set model.modalities.image.processor."
        "max_pixels=100000000 (repeatable; other settings are fixed by the weights)",
    )


def _add_debug(parser: argparse.ArgumentParser, default: object = argparse.SUPPRESS) -> None:
    # On every verb too (`polymodal train x.yaml --debug`); SUPPRESS keeps a verb from resetting the global flag.
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show the full traceback of an error (also: POLYMODAL_DEBUG=1)")


def _at_least(minimum: int):
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


class _OneLineErrors(argparse.ArgumentParser):
    """Usage errors as one line, like every other error of the CLI (the usage itself is one --help away)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # `--backend` must not silently mean `--backend-option`
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Parser(_OneLineErrors):
    """Every verb's parser takes --debug as well."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _add_debug(self)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(
        prog="polymodal",
        description="Multimodal deep learning on text, images and audio: build, train, evaluate and ship fused models.",
    )
    _add_debug(parser, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = sub.add_parser(
        "demo",
        help="train and compare unimodal and fused models on the built-in spoken-digits data",
        description="The main job on the built-in data set: trains image-only, audio-only and several fusion models "
        "on spoken digits, evaluates them on the held-out test split and prints a comparison table "
        "(also written as JSON + Markdown to --out). --task align / finetune run the alignment and "
        "fine-tuning comparisons instead; --task tune a small hyperparameter study (needs optuna).",
    )
    demo.add_argument("--task", choices=["classify", "align", "finetune", "tune"], default="classify")
    demo.add_argument("--out", default=None,
                      help="output directory (default: polymodal_out/demo/TASK, plus _quick for --quick)")
    demo.add_argument("--quick", action="store_true", help="a reduced run (seconds): fewer epochs, samples, fusions")
    demo.add_argument("--fusions", default=None, help="comma-separated fusion names to compare (default: a selection)")
    demo.add_argument("--epochs", type=_at_least(1), default=None, help="epochs per model (default: recipe's)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--pretrained",
        default=None,
        help="--task finetune: start from this Hugging Face audio checkpoint (hub name or local directory) "
        "instead of pretraining the audio encoder first",
    )

    train = sub.add_parser(
        "train",
        help="train a model from a YAML/JSON config",
        description="Train a model from a config file. The run directory (train.out_dir) receives the resolved "
        "config, metrics.jsonl/csv, checkpoints, the best model (best/) and test metrics.json.",
    )
    train.add_argument("config", help="YAML or JSON config (see configs/)")
    _add_overrides(train)
    train.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    train.add_argument("--out", default=None, help="run directory (overrides train.out_dir)")
    train.add_argument("--finetune", default=None, metavar="STRATEGY",
                       help="shorthand for --set finetune.default=STRATEGY (full, frozen, linear_probe, lora, "
                       "loha, lokr, ia3, prompt; `polymodal list finetune` describes them)")
    train.add_argument("--nproc", type=_at_least(1), default=None, metavar="N",
                       help="train one model on N processes of this machine (launches torchrun; data.batch_size is "
                       "per process, see docs/DISTRIBUTED.md)")

    ev = sub.add_parser(
        "eval",
        help="evaluation report of a trained model (quality + CIs, efficiency, robustness), or compare two runs",
        description="Evaluate a model on a split of the data set it was trained on (default test) or on a manifest. "
        "Writes metrics.json (classification report), predictions.json and report.json / report.md / "
        "report.html (plots embedded): quality with bootstrap 95% CIs, calibration, efficiency (params, "
        "FLOPs, latency, throughput, memory, size) and robustness (modality ablations, corruptions). "
        "--compare RUN_A RUN_B runs a paired bootstrap on the samples both were evaluated on.",
    )
    ev.add_argument("model", nargs="?", help="run directory (uses its best/ model) or model directory")
    ev.add_argument("--data", default=None, help="a manifest (JSONL/CSV) to evaluate on instead of the split")
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--out", default=None, help="output directory (default: <run or model dir>/eval_<split>)")
    ev.add_argument("--bootstrap", type=_at_least(0), default=None, metavar="N",
                    help="bootstrap resamples for the confidence intervals / comparison (default 1000; 0 = none)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the corruption noise")
    ev.add_argument("--no-robustness", action="store_true", help="skip modality ablations and corruption curves")
    ev.add_argument("--no-efficiency", action="store_true", help="skip FLOPs / latency / memory measurements")
    ev.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), default=None,
                    help="paired-bootstrap comparison of two runs / eval directories on the same samples")
    ev.add_argument("--metric", default="accuracy", choices=["accuracy", "macro_f1"],
                    help="headline metric for --compare (default: %(default)s)")
    _add_processor_overrides(ev)

    pred = sub.add_parser(
        "predict",
        help="predict the label of raw inputs (any subset of modalities)",
        description="Predict with a saved model on raw files/strings. Give any subset of the model's modalities "
        "with --image/--audio/--text, or --input NAME=VALUE for custom modality names. An alignment model gives a "
        "zero-shot label for image / audio inputs: the closest of the class names saved with it (--classes to "
        "choose others).",
    )
    pred.add_argument("model", help="model directory (or run directory); with --backend onnx an export directory")
    pred.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                      help="torch: the saved model; onnx: an export of `polymodal export` / `compress --method int8`, "
                      "run with onnxruntime (default: %(default)s)")
    pred.add_argument("--image", default=None, help="image file")
    pred.add_argument("--audio", default=None, help="audio file")
    pred.add_argument("--text", default=None, help="text string")
    pred.add_argument("--input", action="append", default=[], metavar="NAME=VALUE", help="modality by name")
    pred.add_argument("--top", type=_at_least(1), default=5, help="how many labels to show")
    pred.add_argument("--json", action="store_true", help="print JSON")
    pred.add_argument("--classes", default=None, metavar="A,B,...",
                      help="alignment models: comma-separated zero-shot class names (default: those saved with it)")
    pred.add_argument("--template", action="append", default=[], metavar="TEXT",
                      help="alignment models: a prompt template with one {} for the class name, e.g. "
                      "'a handwritten {}' (repeatable; default: those saved with the model)")
    _add_processor_overrides(pred)

    lst = sub.add_parser("list", help="list registered encoders, fusions, connectors, heads, objectives, data sets, "
                         "fine-tuning strategies and presets")
    lst.add_argument("kind", nargs="?", choices=["encoders", "fusions", "connectors", "heads", "objectives", "datasets",
                                                 "finetune", "presets"])

    exp = sub.add_parser(
        "export-data",
        help="write a built-in data set as files + manifests (to see the manifest format)",
    )
    exp.add_argument("name", nargs="?", default="spoken-digits")
    exp.add_argument("--out", default="spoken_digits_export")
    exp.add_argument("--limit", type=_at_least(1), default=None, help="rows per split")
    bench = sub.add_parser(
        "bench",
        help="train + evaluate a grid (fusions x encoders x fine-tuning x seeds) and write a leaderboard",
        description="Run a bench suite (YAML; `spoken-digits` names the built-in one) and write leaderboard.md / "
        ".csv / .html (mean ± std over seeds + efficiency columns), runs.csv and bench.json to --out.",
    )
    bench.add_argument("suite", help="suite YAML file, or a built-in suite name (spoken-digits)")
    bench.add_argument("--quick", action="store_true", help="the suite's reduced grid (minutes on a laptop CPU)")
    bench.add_argument("--out", default="polymodal_out/bench", help="output directory (default: %(default)s)")
    from .alignment.cli import add_retrieve_parser  # the `retrieve` verb lives with the alignment code

    add_retrieve_parser(sub, positive=_at_least(1))
    from .inference.serve.cli import add_serve_parser  # the `serve` verb lives with the server code

    add_serve_parser(sub, positive=_at_least(1))
    # the `tune` verb lives with the search code (optuna is imported on use)
    from .tune.cli import add_tune_parser

    add_tune_parser(sub, positive=_at_least(1))
    from .ensemble.cli import add_ensemble_parser  # the `ensemble` verb lives with the ensemble code

    add_ensemble_parser(sub, positive=_at_least(1))
    from .inference.export.cli import add_compress_parser, add_export_parser  # with the export code

    add_export_parser(sub, positive=_at_least(1))
    add_compress_parser(sub, positive=_at_least(1))
    from .explain.cli import add_explain_parser  # the `explain` verb lives with the explanation code

    add_explain_parser(sub, positive=_at_least(1))
    runs = sub.add_parser("runs", help="list past runs under a directory (config hash, task, metrics, time)",
                          description="List the run directories under DIR (default: .) as a table: task, config "
                          "hash, status, best validation metric, test accuracy, epochs, start and duration.")
    runs.add_argument("dir", nargs="?", default=".", help="folder to search (default: the current one)")
    runs.add_argument("--json", action="store_true", help="print JSON rows")
    return parser


def one_line(text: str) -> str:
    """A message as one line: its lines joined with "; " (row listings stay readable, logs stay greppable)."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def describe_error(err: BaseException) -> str:
    """The one line printed for an expected error: its own message, never a bare key or an empty string."""
    if isinstance(err, KeyError) and not isinstance(err, PolymodalError):
        key = err.args[0] if err.args else None
        if isinstance(key, str) and " " in key.strip():  # our KeyErrors are sentences
            return one_line(key)
        return (f"the entry {key!r} is missing (KeyError): a file or object is not of the kind this command "
                "expects; run with --debug to see where")
    if isinstance(err, OSError) and not isinstance(err, PolymodalError) and err.filename and err.strerror:
        return f"{err.strerror}: {err.filename}"
    text = one_line(str(err))
    if not text:
        return f"{type(err).__name__} (no message); run with --debug to see where"
    if isinstance(err, TypeError) and not isinstance(err, PolymodalError):
        return f"{text} (TypeError; run with --debug to see where)"
    return text


@contextmanager
def concise_warnings(verb: str) -> Iterator[None]:
    """Print polymodal's own warnings as ``polymodal VERB: warning: ...`` (one line, no source line); warnings
    from other libraries keep Python's format."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if str(filename).startswith(package):
            print(f"polymodal {verb}: warning: {one_line(str(message))}", file=file or sys.stderr, flush=True)
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original


# Expected errors: polymodal's own, and what bad input raises in the libraries below (a missing file, a bad value).
EXPECTED_ERRORS = (PolymodalError, ConfigError, OSError, KeyError, ValueError, TypeError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    debug = bool(getattr(args, "debug", False) or os.environ.get("POLYMODAL_DEBUG"))
    try:
        from . import commands

        if debug:
            return getattr(commands, f"cmd_{args.command.replace('-', '_')}")(args) or 0
        with concise_warnings(args.command):
            return getattr(commands, f"cmd_{args.command.replace('-', '_')}")(args) or 0
    except EXPECTED_ERRORS as err:
        if debug:
            raise
        print(f"polymodal {args.command}: error: {describe_error(err)}", file=sys.stderr)
        code = getattr(err, "exit_code", 2)
        return code if isinstance(code, int) and code > 0 else 2  # e.g. 130 for a run interrupted by Ctrl-C
    except KeyboardInterrupt:  # Ctrl-C outside a training loop (which handles it itself): no traceback
        if debug:
            raise
        print(f"polymodal {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
