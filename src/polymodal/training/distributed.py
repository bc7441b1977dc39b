"""Distributed data parallel glue for torchrun: process group, ranks, sharded resumable sampler, metric reduction.

One process per device (``torchrun --nproc_per_node=N -m polymodal train CONFIG``); every process builds the same
model from the same seed, DistributedDataParallel (PyTorch's own engine) averages gradients, and only rank 0
writes the run directory. Semantics (docs/DISTRIBUTED.md):

- ``data.batch_size`` is PER PROCESS; one optimizer step consumes ``batch_size × world_size × grad_accum``
  samples, and schedules (warm-up, decay, ``max_steps``) count optimizer steps of that global batch.
- The training order of an epoch is a function of (seed, epoch) alone (:class:`DistributedEpochSampler`): the
  epoch's permutation is padded to a multiple of the world size (as torch's DistributedSampler does, so every rank
  runs the same number of steps) and rank r takes positions r, r + W, r + 2W, ... A resumed epoch starts each
  rank at its first batch not yet consumed.
- Validation runs on rank 0 over the whole split (every sample exactly once, no padding duplicates), with the
  cross-rank contrastive gather off, and its metrics are broadcast: the numbers a 2-process run prints are the
  ones one process computes on the same weights.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

from ..errors import PolymodalError
from .reproducibility import EpochShuffleSampler, with_sampler

RENDEZVOUS_KEYS = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedSetupError(PolymodalError):
    """A multi-process launch that cannot become one training job (missing torchrun variables, bad loader)."""


def launched(environ: Mapping[str, str] | None = None) -> bool:
    """True when started by a multi-process launcher (torchrun sets WORLD_SIZE > 1)."""
    environ = os.environ if environ is None else environ
    try:
        return int(environ.get("WORLD_SIZE", "1") or 1) > 1
    except ValueError:
        return False


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """Rank 0 (or a single process): the one that writes the run directory."""
    return rank() == 0


def local_rank(environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    return int(environ.get("LOCAL_RANK", "0") or 0)


def init_distributed(device: str = "auto", timeout_minutes: float = 30.0) -> bool:
    """Join the torchrun process group when launched with WORLD_SIZE > 1; True if this call created it.

    Backend: nccl when the run uses CUDA (each process takes GPU ``LOCAL_RANK``), gloo on CPU. Idempotent: an
    existing group (a test, or a caller that set one up) is used as it is. Raises DistributedSetupError when
    WORLD_SIZE > 1 but torchrun's rendezvous variables (RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) are missing.
    """
    if dist.is_available() and dist.is_initialized():
        return False
    if not launched():
        return False
    missing = [key for key in RENDEZVOUS_KEYS if not os.environ.get(key)]
    if missing:
        raise DistributedSetupError(
            f"WORLD_SIZE={os.environ.get('WORLD_SIZE')} but {', '.join(missing)} not set: start multi-process "
            "training with torchrun (torchrun --nproc_per_node=N -m polymodal train CONFIG) or `polymodal train "
            "CONFIG --nproc N`, or unset WORLD_SIZE for one process"
        )
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group(
        backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=timeout_minutes)
    )
    return True


def cleanup(created: bool = True) -> None:
    """Destroy the process group (only the one :func:`init_distributed` created: pass its return value)."""
    if created and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for_rank(device: torch.device) -> torch.device:
    """Under torchrun a CUDA device is this process's GPU (``cuda:LOCAL_RANK``, set by init_distributed), whatever
    index the config names: one process per device, never two ranks on one GPU."""
    if device.type == "cuda" and is_initialized():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def barrier() -> None:
    if is_initialized():
        dist.barrier()


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (builds the feature cache), the others run it after (and read what it built)."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Rank ``src``'s value on every rank (the identity in one process)."""
    if not is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum over ranks of a few float64 numbers (loss sums and counts)."""
    if not is_initialized():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def all_reduce_max(values: list[float]) -> list[float]:
    """Element-wise max over ranks (a stop request reaching one rank stops all at the same step)."""
    if not is_initialized():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class DistributedEpochSampler(EpochShuffleSampler):
    """This rank's share of the (seed, epoch) order, padded so every rank gets ``ceil(n / W)`` indices.

    ``num_samples`` is the per-rank count (what ``set_epoch(e, start=k)`` and ``len`` refer to); ``dataset_size``
    the split's. Padding repeats the first indices of the epoch's order (torch DistributedSampler's rule).
    """

    def __init__(self, dataset_size: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        self.dataset_size, self.rank, self.world_size = int(dataset_size), int(rank), int(world_size)
        per_rank = -(-self.dataset_size // self.world_size)
        super().__init__(per_rank, seed=seed, shuffle=shuffle)

    def order(self, epoch: int) -> list[int]:
        full = EpochShuffleSampler(self.dataset_size, self.seed, self.shuffle).order(epoch)
        total = self.num_samples * self.world_size
        while full and len(full) < total:  # pad (may need several rounds when n < W)
            full = full + full[: total - len(full)]
        return full[self.rank : total : self.world_size]


def distributed_train_loader(loader: DataLoader, seed: int) -> tuple[DataLoader, DistributedEpochSampler]:
    """Rebuild a training DataLoader around this rank's :class:`DistributedEpochSampler`.

    Accepts the loaders polymodal builds (shuffle=True/False, or an EpochShuffleSampler); a custom sampler or
    batch_sampler cannot be sharded safely and raises DistributedSetupError.
    """
    sampler = loader.sampler
    if isinstance(sampler, DistributedEpochSampler):
        return loader, sampler
    if isinstance(sampler, EpochShuffleSampler):
        shuffle = sampler.shuffle
    elif isinstance(sampler, RandomSampler) and not sampler.replacement and sampler._num_samples is None:
        shuffle = True
    elif isinstance(sampler, SequentialSampler):
        shuffle = False
    else:
        shuffle = None
    if shuffle is None or loader.batch_size is None:
        raise DistributedSetupError(
            f"multi-process training: the train loader uses "
            f"{type(sampler if loader.batch_size is not None else loader.batch_sampler).__name__}, "
            "which cannot be sharded across ranks; build it with DataLoader(dataset, batch_size=..., shuffle=...)"
        )
    new_sampler = DistributedEpochSampler(len(loader.dataset), seed=seed, shuffle=shuffle, rank=rank(),
                                          world_size=world_size())
    return with_sampler(loader, new_sampler), new_sampler


def local_objectives():
    """Contrastive losses act as one process inside the block (rank-0 validation: no cross-rank gather)."""
    from ..objectives.distributed import local_only

    return local_only()
