"""Temp files and folders for atomic writes that get the modes a plain ``open()`` / ``mkdir`` would give.

Atomic writes go to a temp file (or folder) next to the target, then ``os.replace`` it in. ``tempfile.mkstemp``
and ``tempfile.mkdtemp`` create 0600 / 0700 on purpose (they are meant for private scratch data), and the rename
keeps that mode: models, reports and run folders came out unreadable for the user's group, a web server or a
container with another uid, whatever the user's umask said.

Here the temp entry is created with the ordinary default modes (0666 for files, 0777 for folders) and the kernel
applies the process umask, exactly as for ``open(path, "w")`` or ``os.mkdir(path)``: 0644 / 0755 under umask 022,
0600 / 0700 under umask 077.

Some writers pick the mode themselves: safetensors (≥ 0.5) writes through its own private temp file, so every
``model.safetensors`` came out 0600. :func:`apply_plain_modes` resets what such a writer produced to the plain
modes (0666 / 0777 minus the umask) before the rename. The umask is read with :func:`current_umask`, from
/proc/self/status on Linux, which is race-free; the portable ``os.umask(0); os.umask(old)`` pair is not (a thread
creating a file between the two calls gets mode 0666), so elsewhere it runs under a lock, and polymodal itself
never changes the umask.
"""

from __future__ import annotations

import os
import stat
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_ATTEMPTS = 100


def _candidate(directory: Path, prefix: str, suffix: str) -> Path:
    return directory / f"{prefix}{uuid.uuid4().hex[:12]}{suffix}"


def create_temp_file(directory: str | os.PathLike, prefix: str = ".tmp-", suffix: str = ".tmp") -> tuple[int, Path]:
    """A new, empty file in ``directory`` opened for writing: (file descriptor, path).

    Created with O_EXCL (never an existing file) and mode 0666 minus the umask, like ``open(path, "w")``.
    The caller closes the descriptor and removes or renames the file. Raises OSError (e.g. PermissionError).
    """
    directory = Path(directory)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_ATTEMPTS):
        path = _candidate(directory, prefix, suffix)
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a unique temp file in {directory} after {_ATTEMPTS} attempts")


def make_temp_dir(directory: str | os.PathLike, prefix: str = ".tmp-") -> Path:
    """A new, empty folder in ``directory`` with mode 0777 minus the umask (like ``os.mkdir``). Raises OSError."""
    directory = Path(directory)
    for _ in range(_ATTEMPTS):
        path = _candidate(directory, prefix, "")
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a unique temp folder in {directory} after {_ATTEMPTS} attempts")


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where possible (Linux: /proc/self/status, kernel ≥ 4.7).

    Elsewhere it falls back to ``os.umask(0o077)`` + restore under a lock: the umask is process-wide, so a thread
    creating a file between the two calls (outside polymodal's lock) would get the private 0077 mask for it, never
    a more open one.
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        old = os.umask(0o077)
        os.umask(old)
    return old


def plain_modes() -> tuple[int, int]:
    """(file mode, folder mode) that ``open(path, "w")`` / ``os.mkdir`` give now: 0666 / 0777 minus the umask."""
    umask = current_umask()
    return 0o666 & ~umask, 0o777 & ~umask


def apply_plain_modes(path: str | os.PathLike) -> None:
    """Give ``path`` (and, for a folder, everything in it) the plain modes of :func:`plain_modes`.

    For entries polymodal has just written into a private temp location (a model folder before its rename):
    writers such as safetensors create 0600 files whatever the umask. Symlinks are left alone.
    """
    file_mode, dir_mode = plain_modes()
    path = Path(path)
    entries = [path]
    if path.is_dir() and not path.is_symlink():
        entries += sorted(path.rglob("*"))
    for entry in entries:
        info = entry.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue
        wanted = dir_mode if stat.S_ISDIR(info.st_mode) else file_mode
        if stat.S_IMODE(info.st_mode) != wanted:
            os.chmod(entry, wanted)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temp file in the same directory, then rename: a crash never leaves a half-written file.
    The file gets the mode a plain ``open(path, "wb")`` gives (0666 minus the umask). Returns ``path``."""
    with _atomic_writer(path, "wb") as handle:
        handle.write(data)
    return Path(path)


@contextmanager
def _atomic_writer(path: str | os.PathLike, mode: str, **open_options: Any) -> Iterator[Any]:
    """The temp-file / fsync / rename protocol behind the atomic writers: a handle on a temp file next to
    ``path``, renamed onto it when the block ends without an error; on an error the temp file goes."""
    path = Path(path)
    fd, tmp = create_temp_file(path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_options) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_text_writer(path: str | os.PathLike) -> Iterator[Any]:
    """A UTF-8 text handle on a temp file next to ``path``, renamed onto ``path`` when the block ends without an
    error (flushed and fsynced first); an error inside the block removes the temp file and leaves ``path`` as it
    was. For files written a piece at a time (prediction streams); :func:`atomic_write_bytes` for a whole one."""
    with _atomic_writer(path, "w", encoding="utf-8") as handle:
        yield handle


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_safetensors(state: dict[str, Any], path: str | os.PathLike,
                            metadata: dict[str, str] | None = None) -> None:
    """Save ``state`` (name → torch.Tensor) as safetensors via a temp file + rename (mode as for a plain
    ``open``: 0666 minus the umask)."""
    from safetensors.torch import save_file  # torch-level dependency, only for this writer

    path = Path(path)
    fd, tmp = create_temp_file(path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        # safetensors refuses tensors that share memory; clone those so tied weights save cleanly.
        seen: dict[int, str] = {}
        clean = {}
        for key, tensor in state.items():
            ptr = tensor.untyped_storage().data_ptr() if tensor.numel() else -1
            clean[key] = tensor.clone() if ptr in seen and ptr != -1 else tensor
            seen.setdefault(ptr, key)
        save_file(clean, str(tmp), metadata=metadata)
        apply_plain_modes(tmp)  # safetensors writes via its own 0600 temp file, whatever the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["apply_plain_modes", "atomic_save_safetensors", "atomic_write_text", "create_temp_file", "current_umask",
           "make_temp_dir", "plain_modes"]
