"""Gathering embeddings across ranks for contrastive losses, with gradients flowing back to every rank.

Why a custom autograd Function rather than ``all_gather`` + "replace the local slice" (open_clip's default):
with the replace trick, rank r only receives the gradient of the terms *it* computed. That is exact for the
full-matrix loss but (a) loses the other ranks' column terms with ``local_loss=True`` and (b) leaves DDP's
gradient *average* world_size times too small. Here the backward all-reduces (sums) the gradient of the
gathered tensor over ranks before taking the local rows, as ``torch.distributed.nn.all_gather`` does, so that

    DDP-averaged gradient on N ranks × batch B  ==  gradient of one process on the N·B batch

for both ``local_loss=False`` (each rank computes the full [N·B, N·B] loss) and ``local_loss=True`` (each rank
computes its own rows against all columns, scaled so the rank average is the global mean).

Ranks may hold different numbers of rows (the pair's "both modalities present" filter differs per rank):
sizes are exchanged first and tensors are padded to the largest size for the collective.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import Tensor

_LOCAL_ONLY = [False]  # set by local_only(): rank-0 validation under torchrun must not gather


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Inside the block the losses act as one process (no gather), whatever torch.distributed says; used by the
    Trainer's rank-0-only validation, where the other ranks are not running the same batches."""
    previous, _LOCAL_ONLY[0] = _LOCAL_ONLY[0], True
    try:
        yield
    finally:
        _LOCAL_ONLY[0] = previous


def world_info() -> tuple[int, int]:
    """(rank, world_size); (0, 1) when torch.distributed is not initialised (or inside :func:`local_only`)."""
    if not _LOCAL_ONLY[0] and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_sizes(n: int, device: torch.device) -> list[int]:
    """Row count of every rank (one tiny all_gather)."""
    _, world = world_info()
    if world == 1:
        return [n]
    local = torch.tensor([n], device=device, dtype=torch.long)
    sizes = [torch.zeros_like(local) for _ in range(world)]
    dist.all_gather(sizes, local)
    return [int(s.item()) for s in sizes]


def _padded_all_gather(x: Tensor, sizes: list[int]) -> Tensor:
    """all_gather of [n_r, ...] tensors with different n_r → [sum(n_r), ...] in rank order."""
    _, world = world_info()
    longest = max(sizes)
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    buffers = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(buffers, padded.contiguous())
    return torch.cat([buf[:size] for buf, size in zip(buffers, sizes)], dim=0)


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: gather rows from all ranks. Backward: sum the incoming gradient over ranks, keep local rows."""

    @staticmethod
    def forward(ctx, x: Tensor, sizes: list[int]) -> Tensor:  # type: ignore[override]
        ctx.sizes = sizes
        ctx.rank = world_info()[0]
        return _padded_all_gather(x, sizes)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None


def all_gather_rows(x: Tensor, with_grad: bool = True, sizes: list[int] | None = None) -> tuple[Tensor, int]:
    """Gather ``x`` [n, ...] from every rank → ([total, ...], offset of this rank's rows).

    Without torch.distributed this is the identity with offset 0. ``with_grad=False`` for labels / ids.
    """
    rank, world = world_info()
    if world == 1:
        return x, 0
    sizes = sizes if sizes is not None else gather_sizes(int(x.shape[0]), x.device)
    offset = sum(sizes[:rank])
    if with_grad and x.requires_grad:
        return _AllGatherWithGrad.apply(x, sizes), offset
    with torch.no_grad():
        return _padded_all_gather(x, sizes), offset
