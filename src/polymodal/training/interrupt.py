"""Ctrl-C (SIGINT) and SIGTERM as a normal way for a long run to end.

The first signal only sets a flag: the Trainer finishes the optimizer step in progress, writes a resumable
(mid-epoch) checkpoint and raises :class:`TrainingInterrupted`, whose message names the checkpoint and the
exact ``polymodal train ... --resume`` command; the CLI prints it as one line and exits 128 + signal (130 for
Ctrl-C, 143 for SIGTERM). A second signal raises ``KeyboardInterrupt`` at once; checkpoint writes are atomic
(see :mod:`.checkpoint`), so even a second Ctrl-C during a write leaves the previous checkpoint complete.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from ..errors import PolymodalError


class TrainingInterrupted(PolymodalError):
    """The run stopped on a signal. ``exit_code`` is 128 + the signal number (130 for Ctrl-C)."""

    def __init__(self, message: str, signum: int = signal.SIGINT, checkpoint: Path | None = None):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)
        self.checkpoint = checkpoint


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def resume_command(run_dir: str | os.PathLike) -> str:
    """The command that continues this run: the CLI's own arguments plus ``--resume`` when started as
    ``polymodal train ...``; otherwise the library call."""
    argv = sys.argv
    if len(argv) >= 2 and argv[1] == "train":
        args = list(argv[1:])
        if "--resume" not in args:
            args.append("--resume")
        return "polymodal " + shlex.join(args)
    return f"Trainer(...).fit(resume=True) with run_dir={str(run_dir)!r} (CLI: polymodal train CONFIG --resume)"


class StopSignals:
    """``with StopSignals() as stop:`` — the first SIGINT / SIGTERM sets ``stop.requested`` (the signal number);
    the second raises ``KeyboardInterrupt``. Previous handlers are restored on exit. Outside the main thread
    (where Python cannot install handlers) it does nothing and ``requested`` stays None."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)

    def __init__(self, notice: bool = True):
        self.requested: int | None = None
        self.notice = notice
        self._previous: dict[int, object] = {}
        self._pid = os.getpid()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:
            # A forked DataLoader worker inherited this handler. Ctrl-C (and a scheduler's SIGTERM) reach the whole
            # process group; the main process decides: the worker keeps serving batches until the loader shuts
            # it down (a worker that died here would turn the clean stop into "worker exited unexpectedly").
            return
        if self.requested is not None:
            raise KeyboardInterrupt  # a second signal: stop at once
        self.requested = signum
        if self.notice:
            # os.write, not print: a handler may run while the main thread is inside a print to stderr.
            message = (
                f"polymodal: {signal_name(signum)} received: finishing the current step and saving a checkpoint "
                "(press Ctrl-C again to stop at once)\n"
            )
            try:
                os.write(sys.stderr.fileno(), message.encode())
            except (OSError, ValueError, AttributeError):
                pass

    def __enter__(self) -> StopSignals:
        self._pid = os.getpid()
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                previous = signal.getsignal(signum)
                if previous is signal.SIG_IGN:  # ignored by the launcher (nohup, background jobs): keep it so
                    continue
                self._previous[signum] = previous
                signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
