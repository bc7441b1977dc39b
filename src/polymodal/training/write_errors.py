"""Write failures (full disk, quota, file-size limit, device I/O error) as one clear error, whatever raised them.

The libraries that write our files report a full disk in their own words: ``OSError(ENOSPC)`` from Python,
``RuntimeError: [enforce fail at inline_container.cc] . unexpected pos ...`` or ``PytorchStreamWriter failed
writing file`` from ``torch.save``, ``SafetensorError: ... IoError(Os { code: 28, kind: StorageFull ... })``
from safetensors. :func:`translate_write_errors` turns each of them into a :class:`DiskFullError` that names
the path being written, says which limit ran out, and (when the caller knows it) where the last complete
checkpoint is. Anything else passes through untouched.

This module imports only :mod:`polymodal.errors`, so any layer may use it.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import PolymodalError

REASONS = {
    errno.ENOSPC: "the disk is full (no space left on device)",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EFBIG: "a file-size limit was hit (file too large)",
    errno.EIO: "the device reported an I/O error",
}

# Library wordings of the same failures (Rust io::ErrorKind names / os error codes, C strerror texts).
_PATTERNS = [
    (re.compile(r"no space left|storagefull|os error 28|code: 28\b", re.I), errno.ENOSPC),
    (re.compile(r"quota exceeded|filesystemquotaexceeded|os error 122|code: 122\b", re.I), errno.EDQUOT),
    (re.compile(r"file too large|filetoolarge|os error 27|code: 27\b", re.I), errno.EFBIG),
    (re.compile(r"input/output error|os error 5\b|code: 5\b", re.I), errno.EIO),
]
# torch.save's C++ writer only says that a write came up short; which limit it was is found out afterwards.
_SHORT_WRITE = re.compile(r"unexpected pos|failed writing|file write failed|PytorchStreamWriter", re.I)
_UNKNOWN = -1


class DiskFullError(PolymodalError, OSError):
    """A write failed because space, quota or the file-size limit ran out (or the device failed).

    Also an ``OSError`` (``errno`` set), so code that handles write failures keeps working.
    """

    def __init__(self, message: str, code: int | None = None, path: str | os.PathLike | None = None):
        super().__init__(message)
        self.errno = code if code and code > 0 else None
        self.filename = str(path) if path is not None else None

    def __str__(self) -> str:  # OSError would print "[Errno 28] ..." for a two-argument form; keep one line
        return self.args[0]


def write_error_code(err: BaseException) -> int | None:
    """The errno behind a write failure (ENOSPC, EDQUOT, EFBIG, EIO; -1 for torch's unspecific short write),
    looking through ``__cause__`` / ``__context__``; None when ``err`` is not a write failure of that kind."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PolymodalError):  # already a user-facing message (it may quote a path)
            return None
        if isinstance(current, OSError) and current.errno is not None:
            if current.errno in REASONS:
                return current.errno
            current = current.__cause__ or current.__context__  # its text is a path + strerror: no guessing
            continue
        text = str(current)
        for pattern, code in _PATTERNS:
            if pattern.search(text):
                return code
        if _SHORT_WRITE.search(text):
            return _UNKNOWN
        current = current.__cause__ or current.__context__
    return None


def _guess_limit(path: Path) -> int:
    """For a short write that names no cause: a set file-size limit, or a nearly full disk, or unknown."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if soft != resource.RLIM_INFINITY:
            return errno.EFBIG
    except (ImportError, OSError, ValueError):
        pass
    try:
        if shutil.disk_usage(_existing(path)).free < 64 * 2**20:
            return errno.ENOSPC
    except OSError:
        pass
    return _UNKNOWN


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _free_space(path: Path) -> str:
    try:
        free = shutil.disk_usage(_existing(path)).free
    except OSError:
        return ""
    return f"; {free / 2**20:.1f} MB left on that file system"


def describe_write_error(err: BaseException, path: str | os.PathLike, kept: str | None = None) -> DiskFullError | None:
    """A :class:`DiskFullError` for ``err`` (None when ``err`` is no write failure of the known kinds)."""
    code = write_error_code(err)
    if code is None:
        return None
    path = Path(getattr(err, "filename", None) or path)
    if code == _UNKNOWN:
        code = _guess_limit(path)
    reason = REASONS.get(code, "the disk is full or a file-size limit was hit (the write came up short)")
    action = {errno.EFBIG: "raise the limit (ulimit -f)", errno.EIO: "check the device (dmesg)"}.get(
        code, "free space there (or write elsewhere)"
    )
    free = _free_space(path) if code in (errno.ENOSPC, errno.EDQUOT, _UNKNOWN) else ""
    message = f"could not write {path}: {reason}{free}; {action}"
    if kept:
        message += f"; {kept}"
    return DiskFullError(message, code, path)


@contextmanager
def translate_write_errors(path: str | os.PathLike, kept: str | Callable[[], str | None] | None = None) -> Iterator[None]:
    """Re-raise full-disk / quota / file-size / I/O write failures inside the block as :class:`DiskFullError`.

    path: the file or directory being written (named in the message when the error names no file itself).
    kept: what is still intact (e.g. "the last complete checkpoint is kept at ..."), or a callable that says it
        at failure time.
    """
    try:
        yield
    except PolymodalError:  # DiskFullError from an inner block, a diverged run, a config error: as they are
        raise
    except Exception as err:
        note = kept() if callable(kept) else kept
        translated = describe_write_error(err, path, note)
        if translated is None:
            raise
        raise translated from err
