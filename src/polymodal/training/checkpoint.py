"""Crash-safe training checkpoints: everything needed to continue a run exactly where it stopped.

Layout of ``run_dir/checkpoints/last/``:
  model.safetensors    model weights (all of them, frozen ones included)
  optimizer.pt         optimizer / LR scheduler / grad scaler state and torch + CUDA RNG states; only tensors
                       and primitives, loaded with ``torch.load(weights_only=True)`` (no pickle code execution)
  trainer_state.json   counters (epoch, step, batch position), best metric, patience, python / numpy RNG
                       states; written last, so its presence marks a complete checkpoint

Under ``train.strategy: fsdp`` on several processes the model and optimizer go sharded instead
(``sharded/`` written by torch.distributed.checkpoint + ``extra.pt``; see :mod:`.fsdp`); :func:`load_checkpoint`
reads both formats into a plain or a sharded model.

Atomicity: a checkpoint is written into a temp directory next to its target, every file fsynced, then swapped
in with two renames (old → ``.last.old-*``, temp → ``last``); the old one is deleted only after that. A crash
at any point leaves either the old or the new checkpoint complete: :func:`recover_directory` restores the old
one if the crash fell between the two renames, and stray temp directories are removed on the next save.
SIGINT / SIGTERM are held back during the two renames, so a second Ctrl-C cannot fall between them.

Write failures (full disk, quota, file-size limit) surface as one :class:`~.write_errors.DiskFullError`
naming the path and the checkpoint that is still complete, whichever library (torch, safetensors) failed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from ..files import apply_plain_modes, make_temp_dir
from . import fsdp
from .reproducibility import python_numpy_rng_state, restore_python_numpy_rng_state
from .write_errors import translate_write_errors

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "trainer_state.json"
FORMAT_VERSION = 1


def _fsync_tree(directory: Path) -> None:
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # directories cannot be opened on some platforms (Windows): nothing to sync there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _stale_siblings(target: Path, kind: str) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.{kind}-*"))


def recover_directory(target: Path, is_complete: Callable[[Path], bool] = lambda p: True) -> None:
    """Undo a swap interrupted between its two renames, and remove leftover temp directories."""
    target = Path(target)
    if not target.exists():
        for old in reversed(_stale_siblings(target, "old")):
            if is_complete(old):
                os.replace(old, target)
                break
    for leftover in _stale_siblings(target, "tmp") + _stale_siblings(target, "old"):
        shutil.rmtree(leftover, ignore_errors=True)


_HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Defer SIGINT / SIGTERM to the end of the block: they reach their handlers right after it.

    Python-level, not ``pthread_sigmask``: a process-directed signal blocked in the main thread is delivered to
    another thread (torch's), and Python runs its handler in the main thread anyway. Only the main thread can
    swap handlers; elsewhere the block runs as is (signals raise in the main thread, not in this one).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {signum: signal.signal(signum, lambda s, f: caught.append(s)) for signum in _HELD_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in caught:
            _redeliver(signum, previous[signum])


def _redeliver(signum: int, handler: Any) -> None:
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        os.kill(os.getpid(), signum)  # the default action, now that the default handler is back


@contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temp directory; on success it replaces ``target`` atomically, on error it vanishes."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(target)
    # Not tempfile.mkdtemp: its 0700 would become the mode of the run's best/ and checkpoints/last/ after the
    # rename; make_temp_dir gives what a plain mkdir gives under the user's umask.
    tmp = make_temp_dir(target.parent, prefix=f".{target.name}.tmp-")
    try:
        yield tmp
        apply_plain_modes(tmp)  # the umask's modes: safetensors (save_model) writes 0600 files whatever the umask
        _fsync_tree(tmp)
        old = None
        with _signals_held():
            if target.exists():
                old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
                os.replace(target, old)
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def checkpoint_files(path: Path) -> tuple[str, ...]:
    """The files a complete checkpoint at ``path`` holds: the sharded format's (:mod:`.fsdp`) when its DCP
    directory is there, else the ordinary one's."""
    if fsdp.is_sharded_checkpoint(path):
        return (f"{fsdp.SHARDED_DIR}/.metadata", fsdp.EXTRA_FILE, STATE_FILE)
    return (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE)


def is_complete_checkpoint(path: Path) -> bool:
    return all((Path(path) / name).is_file() for name in checkpoint_files(Path(path)))


def torch_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_torch_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    trainer_state: dict[str, Any],
) -> Path:
    """Write a complete checkpoint at ``path`` atomically (see module docstring); returns ``path``.

    Raises DiskFullError (a PolymodalError) when space / quota / the file-size limit runs out; the previous
    checkpoint at ``path`` is then still complete.
    """
    path = Path(path)
    with write_checkpoint_directory(path, trainer_state) as tmp:
        save_model(model, str(tmp / MODEL_FILE))
        tensors = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
            "rng": torch_rng_state(),
        }
        torch.save(tensors, tmp / OPTIMIZER_FILE)
    return path


@contextmanager
def write_checkpoint_directory(path: Path, trainer_state: dict[str, Any]) -> Iterator[Path]:
    """The temp directory a checkpoint's files go into; after the block ``trainer_state.json`` is written (last:
    its presence marks a complete checkpoint) and the directory swapped in for ``path`` (:func:`atomic_directory`).
    Write failures become DiskFullError naming the checkpoint still complete. Both formats (this module's and
    the sharded one of :mod:`.fsdp`) are written through it."""

    def kept() -> str:
        if is_complete_checkpoint(path):
            return f"the last complete checkpoint is kept at {path}"
        return "no complete checkpoint had been written yet"

    with translate_write_errors(path, kept), atomic_directory(path) as tmp:
        yield tmp
        payload = {"format_version": FORMAT_VERSION, **trainer_state, "rng": python_numpy_rng_state()}
        (tmp / STATE_FILE).write_text(json.dumps(payload, indent=1))


def read_trainer_state(path: str | os.PathLike) -> dict[str, Any]:
    file = Path(path) / STATE_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: {path} is not a complete training checkpoint")
    state = json.loads(file.read_text())
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{file}: checkpoint format {state.get('format_version')} is not {FORMAT_VERSION}")
    return state


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore a checkpoint into the given objects; return the trainer state dict (counters, metrics).

    Either format into either kind of model: an ordinary checkpoint into a plain or a sharded (FSDP) model, a
    sharded one (saved on any number of processes) into a sharded model on any number of processes or into a
    plain model in one process (DCP reshards). Raises FileNotFoundError (incomplete checkpoint) or ValueError
    (weights or optimizer state that do not fit the model).
    """
    path = Path(path)
    if not is_complete_checkpoint(path):
        missing = [n for n in checkpoint_files(path) if not (path / n).is_file()]
        raise FileNotFoundError(f"checkpoint {path} is incomplete or missing (no {', '.join(missing)})")
    state = read_trainer_state(path)
    if fsdp.is_sharded_checkpoint(path):
        extra = fsdp.load_sharded_checkpoint(path, model, optimizer, scheduler, scaler)
        fsdp.warn_if_resharded(state, path)
    else:
        extra = torch.load(path / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
        if fsdp.is_sharded(model):
            fsdp.load_full_checkpoint_into_sharded(path, model, optimizer, extra)
        else:
            _load_full_checkpoint(path, model, optimizer, extra)
        if scheduler is not None and extra.get("scheduler") is not None:
            scheduler.load_state_dict(extra["scheduler"])
        if scaler is not None and extra.get("scaler") is not None:
            scaler.load_state_dict(extra["scaler"])
    for key in ("world_size", "strategy"):  # how it was saved, not trainer counters
        state.pop(key, None)
    if restore_rng:
        restore_torch_rng_state(extra["rng"])
        restore_python_numpy_rng_state(state["rng"])
    return state


def _load_full_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                          extra: dict[str, Any]) -> None:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    missing, unexpected = load_model(model, str(path / MODEL_FILE), strict=False, device=str(device))
    if missing or unexpected:
        raise ValueError(
            f"{path / MODEL_FILE} does not fit this model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    if optimizer is not None:
        try:
            optimizer.load_state_dict(extra["optimizer"])
        except ValueError as err:
            raise ValueError(
                f"{path / OPTIMIZER_FILE}: optimizer state does not match the model's trainable parameters "
                f"({err}); did the set of frozen parameters change since the checkpoint?"
            ) from err


def save_model_weights(model: nn.Module, directory: str | os.PathLike) -> Path:
    """The best model: ``model.save_pretrained`` when the model has it, else ``model.safetensors`` alone;
    either way swapped in atomically."""
    directory = Path(directory)
    kept = f"the previous model at {directory} is kept" if (directory / MODEL_FILE).is_file() else None
    with translate_write_errors(directory, kept), atomic_directory(directory) as tmp:
        if hasattr(model, "save_pretrained"):
            model.save_pretrained(tmp)
        else:
            save_model(model, str(tmp / MODEL_FILE))
    return directory
