"""An exclusive owner for a run (or output) directory, for the whole life of the run.

Two ``polymodal train`` runs into one directory would interleave their metric rows, overwrite each other's
config and best model, and delete each other's temp checkpoints. :class:`RunLock` prevents that: the first
run holds ``<dir>/.polymodal.lock``; a second one refuses to start, naming the holder (pid, host, start,
command).

How the lock is held: ``fcntl.flock(LOCK_EX | LOCK_NB)`` on the lock file. The kernel drops a flock when its
holder dies (even on SIGKILL), so a lock left by a crashed run is stale by construction and is taken over at
the next start; the takeover is reported (:attr:`RunLock.took_over`). Where flock is not available (Windows,
some network file systems answer ENOLCK), the lock falls back to an ``O_CREAT | O_EXCL`` file whose holder is
checked by pid: a lock of a dead pid on this host is replaced atomically (write a temp file, ``os.replace``).

Within one thread the lock is re-entrant (``pipeline.train`` takes it, then ``Trainer.fit`` takes it again):
flock locks belong to an open file description, so a second ``open`` + ``flock`` in the same process would
otherwise refuse its own holder. Another thread of the same process is refused like another process.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PolymodalError

try:
    import fcntl
except ImportError:  # Windows: the pid-file fallback below
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".polymodal.lock"


class RunLockedError(PolymodalError):
    """Another live process holds the run directory's lock."""


class StaleLockWarning(UserWarning):
    """A lock left by a run that died without releasing it was taken over."""


@dataclass
class _Held:
    fd: int | None  # the flock'ed descriptor; None for the pid-file fallback
    count: int
    info: dict[str, Any]
    thread: int  # the owning thread's ident


_HELD: dict[str, _Held] = {}  # resolved lock path → this process's hold on it
_GUARD = threading.Lock()


def _holder_info() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python",
    }


def read_lock_info(path: str | os.PathLike) -> dict[str, Any] | None:
    """The holder recorded in a lock file (pid, host, started, command), or None if absent / unreadable."""
    try:
        data = json.loads(Path(path).read_text() or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process (its lock file is being written)"
    where = f" on {info['host']}" if info.get("host") and info.get("host") != socket.gethostname() else ""
    return f"pid {info.get('pid', '?')}{where}, started {info.get('started', '?')}: {info.get('command', '?')}"


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


class RunLock:
    """``with RunLock(run_dir, what="run directory"):`` — exclusive ownership of ``run_dir``.

    Raises :class:`RunLockedError` (one line naming the holder's pid, start time and command) when another
    live process holds it. Released on exit of the ``with`` block, also when it is left by an exception.
    ``took_over`` is the stale holder's info when a dead run's lock was replaced, else None.
    """

    def __init__(self, directory: str | os.PathLike, what: str = "run directory"):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.what = what
        self.took_over: dict[str, Any] | None = None
        self._key: str | None = None

    # ------------------------------------------------------------------------------------------ public

    def acquire(self) -> RunLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        key = f"{os.getpid()}:{self.path.resolve()}"  # a forked child does not inherit the parent's hold
        with _GUARD:
            held = _HELD.get(key)
            if held is not None and held.thread != threading.get_ident():
                raise self._refuse({**held.info, "command": f"{held.info['command']} (another thread of this process)"})
            if held is not None:  # re-entrant within this thread
                held.count += 1
                self._key = key
                return self
            info = _holder_info()
            fd = self._acquire_flock() if fcntl is not None else None
            if fd is None:
                self._acquire_pidfile(info)
            else:
                try:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, json.dumps(info).encode(), 0)
                except BaseException:  # e.g. a full disk: do not keep a lock nobody will release
                    os.close(fd)
                    raise
            _HELD[key] = _Held(fd=fd, count=1, info=info, thread=threading.get_ident())
            self._key = key
        if self.took_over is not None:
            warnings.warn(
                f"{self.what} {self.directory}: took over the lock of a run that ended without releasing it "
                f"({_describe(self.took_over)}); its files may be incomplete",
                StaleLockWarning,
                stacklevel=2,
            )
        return self

    def release(self) -> None:
        if self._key is None:
            return
        with _GUARD:
            key, self._key = self._key, None
            held = _HELD.get(key)
            if held is None:
                return
            held.count -= 1
            if held.count > 0:
                return
            del _HELD[key]
            # Unlink while still holding the flock: a waiter that opened the old inode re-checks the path.
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            if held.fd is not None:
                os.close(held.fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------------------------------------------------ flock

    def _refuse(self, info: dict[str, Any] | None) -> RunLockedError:
        return RunLockedError(
            f"{self.what} {self.directory} is in use by {_describe(info)}; wait for it to finish, "
            f"or choose another directory (e.g. --out); the lock file is {self.path}"
        )

    def _acquire_flock(self) -> int | None:
        """The locked descriptor, or None when this file system has no flock (use the pid-file fallback)."""
        for _ in range(50):  # retries only when the file was replaced under us (a racing release)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise self._refuse(read_lock_info(self.path)) from None
                if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    return None
                raise
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                # Content but no flock holder: left by a run that died (the kernel dropped its flock). Take over.
                try:
                    stale = json.loads(os.pread(fd, 1 << 16, 0) or b"null")
                except ValueError:
                    stale = None
                if isinstance(stale, dict) and stale.get("pid") != os.getpid():
                    self.took_over = stale
                return fd
            os.close(fd)  # the holder released (unlinked) between our open and flock: try the new file
        raise self._refuse(read_lock_info(self.path))

    # ------------------------------------------------------------------------------------------ fallback

    def _acquire_pidfile(self, mine: dict[str, Any]) -> None:
        """O_EXCL create; a lock of a dead pid on this host is replaced atomically (temp file + rename)."""
        payload = json.dumps(mine).encode()
        for _ in range(50):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                info = read_lock_info(self.path)
                if info is None or info.get("host") != socket.gethostname() or _pid_alive(info.get("pid")):
                    if info is None:
                        time.sleep(0.05)  # being written right now: look again
                        continue
                    raise self._refuse(info) from None
                tmp = self.path.with_name(f"{LOCK_NAME}.{os.getpid()}.tmp")
                tmp.write_bytes(payload)
                os.replace(tmp, self.path)
                if read_lock_info(self.path) == mine:  # another taker may have won the rename
                    self.took_over = info
                    return
                raise self._refuse(read_lock_info(self.path)) from None
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
            return
        raise self._refuse(read_lock_info(self.path))
