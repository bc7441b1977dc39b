"""Multi-process launches: the torchrun entry of the training recipes, and a refusal for the paths that have no
distributed version.

``polymodal train`` (classification and alignment) trains one model across the processes of
``torchrun --nproc_per_node=N`` (see :mod:`.distributed`): :func:`distributed_run` joins the process group, lets
rank 0 alone own the run directory (the run lock), and makes every rank fail with the same one-line error when
rank 0 cannot take the lock (instead of the others waiting forever for it). Other entry points (the demo, grid
runs) still stop every rank at once with :func:`refuse_multi_process_launch`: N processes would train N copies.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from ..errors import PolymodalError


class MultiProcessLaunchError(PolymodalError):
    """Started by a multi-process launcher (WORLD_SIZE > 1) on a path that has no distributed version."""


def world_size(environ: Mapping[str, str] | None = None) -> int:
    """The launcher's process count (torchrun sets WORLD_SIZE); 1 when not launched by one."""
    environ = os.environ if environ is None else environ
    try:
        return int(environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        return 1


def refuse_multi_process_launch(what: str = "this command", environ: Mapping[str, str] | None = None) -> None:
    """Raise :class:`MultiProcessLaunchError` when WORLD_SIZE > 1 (for paths with no distributed training)."""
    environ = os.environ if environ is None else environ
    size = world_size(environ)
    if size <= 1:
        return
    rank = environ.get("RANK", "?")
    raise MultiProcessLaunchError(
        f"{what} was started by a multi-process launcher (torchrun: WORLD_SIZE={size}, this is rank {rank}), "
        "but it has no distributed version: each process would train its own copy into the same run directory. "
        "Run it as one process, or use `polymodal train CONFIG` (which trains one model across torchrun's processes)"
    )


@contextlib.contextmanager
def distributed_run(run_dir: str | os.PathLike, device: str = "auto") -> Iterator[None]:
    """The body of a training recipe: process group joined (torchrun) or not, run lock held by rank 0, write
    failures translated. Destroys the process group it created on exit."""
    from . import distributed as dist_utils
    from .run_lock import RunLock
    from .write_errors import translate_write_errors

    run_dir = Path(run_dir)
    created = dist_utils.init_distributed(device)
    try:
        with contextlib.ExitStack() as stack:
            failure = None
            if dist_utils.is_main():
                try:
                    stack.enter_context(RunLock(run_dir))
                except PolymodalError as error:
                    failure = error
            # Everyone learns whether rank 0 owns the directory; a refusal stops all ranks with rank 0's message.
            message = dist_utils.broadcast_object(None if failure is None else str(failure))
            if failure is not None:
                raise failure
            if message is not None:
                raise MultiProcessLaunchError(f"rank 0 could not start the run: {message}")
            stack.enter_context(translate_write_errors(run_dir))
            yield
    finally:
        dist_utils.cleanup(created)


def launch_rank(environ: Mapping[str, str] | None = None) -> int:
    """This process's torchrun RANK (0 when not launched): who prints the run's final lines."""
    environ = os.environ if environ is None else environ
    try:
        return int(environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


def torchrun_command(nproc: int, train_args: list[str]) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node=N -m polymodal train ...``: one machine,
    a local rendezvous on a free port (--standalone), one process per device."""
    import sys

    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(nproc)}",
            "-m", "polymodal", "train", *train_args]


def launch_torchrun(nproc: int, train_args: list[str]) -> int:
    """Run ``polymodal train`` under torchrun with ``nproc`` processes on this machine; its exit status.

    Each process gets OMP_NUM_THREADS=1 unless the caller set it (torchrun's own default: N processes on one
    machine must not each start a thread per core). Raises MultiProcessLaunchError when already inside a launch.
    """
    import subprocess

    if nproc < 1:
        raise MultiProcessLaunchError(f"--nproc {nproc}: give at least 1 process")
    if world_size() > 1:
        raise MultiProcessLaunchError("--nproc was given inside a multi-process launch (WORLD_SIZE is set): "
                                      "drop --nproc when starting polymodal with torchrun yourself")
    environ = dict(os.environ)
    environ.setdefault("OMP_NUM_THREADS", "1")
    process = subprocess.Popen(torchrun_command(nproc, train_args), env=environ)
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached torchrun and every rank too (one process group): the ranks finish the step, write
            # the checkpoint and exit; killing torchrun here (subprocess.call does) would orphan them.
            continue
