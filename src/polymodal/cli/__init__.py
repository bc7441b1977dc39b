"""The `polymodal` command line: one module per verb (``cli/<verb>.py``, each with ``add_parser(sub)`` and
``run(args)``, calling recipes). This module builds the parser from :data:`VERBS` and runs a verb with the
CLI's error handling.

Errors: an expected error (any :class:`~polymodal.errors.PolymodalError`, and the ValueError / OSError / KeyError a
bad input raises) is printed as ONE line, ``polymodal VERB: error: <cause>``, exit status 2 (or the error's own
``exit_code``: 130 for a run stopped by Ctrl-C). ``polymodal --debug VERB ...`` (or POLYMODAL_DEBUG=1) shows the
traceback instead. polymodal's own warnings are one line too: ``polymodal VERB: warning: <what and what to do>``.

A new verb is one module here plus one entry in :data:`VERBS`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from ..threads import configure_cli_process

# OpenMP reads its wait policy once, when torch loads: set it before anything below imports torch.
configure_cli_process()

from ..config import ConfigError  # noqa: E402
from ..errors import PolymodalError  # noqa: E402
from .common import OneLineErrors, VerbParser, add_debug  # noqa: E402

# (verb, module under polymodal.cli), in the order `polymodal --help` lists them. `list` lives in `listing` so
# that the submodule never shadows the builtin in this package's namespace.
VERBS: tuple[tuple[str, str], ...] = (
    ("demo", "demo"),
    ("train", "train"),
    ("eval", "eval"),
    ("predict", "predict"),
    ("generate", "generate"),
    ("chat", "chat"),
    ("list", "listing"),
    ("export-data", "export_data"),
    ("bench", "bench"),
    ("retrieve", "retrieve"),
    ("serve", "serve"),
    ("tune", "tune"),
    ("ensemble", "ensemble"),
    ("export", "export"),
    ("compress", "compress"),
    ("explain", "explain"),
    ("runs", "runs"),
)


def verb_module(verb: str) -> ModuleType:
    """The module of ``verb`` (``polymodal.cli.<module>``); KeyError for an unknown verb."""
    return importlib.import_module(f"{__name__}.{dict(VERBS)[verb]}")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(
        prog="polymodal",
        description="Multimodal deep learning on text, images and audio: build, train, evaluate and ship fused models.",
    )
    add_debug(parser, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=VerbParser)
    for verb, _ in VERBS:
        verb_module(verb).add_parser(sub)
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
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # polymodal/, not polymodal/cli/
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
        run = verb_module(args.command).run  # looked up per call: tests replace a verb's run
        if debug:
            return run(args) or 0
        with concise_warnings(args.command):
            return run(args) or 0
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


__all__ = ["EXPECTED_ERRORS", "VERBS", "build_parser", "concise_warnings", "describe_error", "main", "one_line",
           "verb_module"]
