"""Run lock: one owner per run directory; a second run refuses naming the holder; stale locks are taken over;
the lock is released at exit, also after an error."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import pytest
from run_fixtures import hold_lock_in_subprocess, kill, loaders, model, train_config

from polymodal.config import ConfigError
from polymodal.errors import PolymodalError
from polymodal.training import Trainer, run_lock
from polymodal.training.run_lock import LOCK_NAME, RunLock, RunLockedError, StaleLockWarning, read_lock_info


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    """A run directory whose lock another live process holds (shared: starting one costs seconds)."""
    directory = tmp_path_factory.mktemp("held")
    holder = hold_lock_in_subprocess(directory)
    yield directory, holder
    kill(holder)


def test_second_holder_is_refused_with_pid_start_and_command(held):
    directory, holder = held
    info = read_lock_info(directory / LOCK_NAME)
    assert info["pid"] == holder.pid and info["host"] == socket.gethostname() and info["started"]
    with pytest.raises(RunLockedError, match=rf"run directory {directory} is in use by pid {holder.pid}, "
                                             rf"started {info['started']}: .*-c") as caught:
        RunLock(directory).acquire()
    assert isinstance(caught.value, PolymodalError) and "\n" not in str(caught.value)


def test_lock_of_a_killed_run_is_taken_over(tmp_path):
    holder = hold_lock_in_subprocess(tmp_path)
    kill(holder)  # SIGKILL: no cleanup ran, the lock file is still there
    assert read_lock_info(tmp_path / LOCK_NAME)["pid"] == holder.pid
    with pytest.warns(StaleLockWarning, match=rf"took over the lock of a run .*pid {holder.pid}"):
        lock = RunLock(tmp_path).acquire()
    assert lock.took_over["pid"] == holder.pid
    assert read_lock_info(tmp_path / LOCK_NAME)["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_pid_file_fallback_without_flock(tmp_path, monkeypatch):
    """Where flock is missing: a live pid on this host refuses, a dead pid is replaced, another host refuses."""
    monkeypatch.setattr(run_lock, "fcntl", None)
    path = tmp_path / LOCK_NAME
    for pid, host, refused in [(os.getppid(), socket.gethostname(), True), (dead_pid(), socket.gethostname(), False),
                               (dead_pid(), "some-other-host", True)]:
        path.write_text(json.dumps({"pid": pid, "host": host, "started": "earlier", "command": "polymodal train x"}))
        if refused:
            with pytest.raises(RunLockedError, match=rf"pid {pid}.*started earlier: polymodal train x"):
                RunLock(tmp_path).acquire()
        else:
            with pytest.warns(StaleLockWarning), RunLock(tmp_path) as lock:
                assert lock.took_over["pid"] == pid
                assert read_lock_info(path)["pid"] == os.getpid()
            assert not path.exists()


def test_reentrant_in_one_thread_refused_from_another(tmp_path):
    with RunLock(tmp_path):
        with RunLock(tmp_path):  # pipeline.train holds it, Trainer.fit takes it again
            pass
        assert (tmp_path / LOCK_NAME).exists()  # still held by the outer one
        errors = []
        thread = threading.Thread(target=lambda: errors.append(_try(RunLock(tmp_path).acquire)))
        thread.start()
        thread.join()
        assert isinstance(errors[0], RunLockedError) and "another thread" in str(errors[0])
    assert not (tmp_path / LOCK_NAME).exists()


def _try(fn):
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - returned for the assertion
        return err
    return None


def test_trainer_refuses_a_held_directory_without_writing_anything(held):
    directory, holder = held
    with pytest.raises(RunLockedError, match=f"in use by pid {holder.pid}"):
        Trainer(model(), train_config(epochs=1), *loaders(), run_dir=directory).fit()
    assert sorted(p.name for p in directory.iterdir()) == [LOCK_NAME]


def test_lock_is_released_after_an_error(tmp_path):
    with pytest.raises(ConfigError, match="train.monitor"):
        Trainer(model(), train_config(epochs=1, monitor="val_bleu"), *loaders(), run_dir=tmp_path).fit()
    assert not (tmp_path / LOCK_NAME).exists()
    with RunLock(tmp_path) as lock:
        assert lock.took_over is None
