"""Multi-process launchers (torchrun, ``torch.distributed.launch``, SLURM via torchrun): refused until polymodal
has distributed training.

Without a process group, DistributedSampler and DDP, every process of ``torchrun --nproc_per_node=N`` would
train its own full copy on all the data and write the same run directory (N copies of every metric row).
:func:`refuse_multi_process_launch` stops every rank at once with one line instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..errors import PolymodalError


class MultiProcessLaunchError(PolymodalError):
    """Started by a multi-process launcher (WORLD_SIZE > 1), which polymodal does not support yet."""


def world_size(environ: Mapping[str, str] | None = None) -> int:
    """The launcher's process count (torchrun sets WORLD_SIZE); 1 when not launched by one."""
    environ = os.environ if environ is None else environ
    try:
        return int(environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        return 1


def refuse_multi_process_launch(what: str = "training", environ: Mapping[str, str] | None = None) -> None:
    """Raise :class:`MultiProcessLaunchError` when WORLD_SIZE > 1 (torchrun with more than one process)."""
    environ = os.environ if environ is None else environ
    size = world_size(environ)
    if size <= 1:
        return
    rank = environ.get("RANK", "?")
    raise MultiProcessLaunchError(
        f"{what} was started by a multi-process launcher (torchrun: WORLD_SIZE={size}, this is rank {rank}), "
        "but polymodal has no distributed (multi-process) training yet: each process would train its own copy "
        "into the same run directory. Run one process: `polymodal train ...` (or torchrun --nproc_per_node=1)"
    )
