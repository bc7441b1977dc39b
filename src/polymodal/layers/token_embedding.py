"""``TokenEmbedding``: nn.Embedding whose [V, D] weight gradient reuses the previous step's memory on CPU."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _storage_use_count(storage: torch.UntypedStorage) -> int | None:
    """How many holders a storage has (ours included); None where this torch build cannot tell."""
    counter = getattr(torch._C, "_storage_Use_Count", None)
    return None if counter is None else counter(storage._cdata)


class _EmbeddingLookup(torch.autograd.Function):
    """weight[ids] whose weight gradient goes into the owner's buffer from the previous step when it is free."""

    @staticmethod
    def forward(ctx, ids: Tensor, weight: Tensor, owner: TokenEmbedding) -> Tensor:
        ctx.save_for_backward(ids)
        ctx.owner = owner
        ctx.weight_shape, ctx.weight_dtype = weight.shape, weight.dtype
        return F.embedding(ids, weight)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        (ids,) = ctx.saved_tensors
        grad_weight = ctx.owner.gradient_buffer(ctx.weight_shape, ctx.weight_dtype, grad.device)
        grad_weight.index_add_(0, ids.reshape(-1), grad.reshape(-1, grad.shape[-1]).to(grad_weight.dtype))
        return None, grad_weight, None


class TokenEmbedding(nn.Embedding):
    """nn.Embedding whose dense weight gradient reuses last step's memory on CPU (same values, same autograd).

    ids [B, L] long → embeddings [B, L, D]. A vocabulary-sized gradient ([49408, 512] fp32 = 100 MB for CLIP)
    is allocated afresh every step once the optimizer sets grads to None, and glibc serves allocations that
    large straight from the kernel: every page faults in again, which took ~150 ms per step here. This module
    keeps the gradient's storage (not the tensor) and hands it back to autograd as a new tensor when nobody else
    holds it, i.e. after ``zero_grad`` dropped it; while ``.grad`` is still alive (gradient accumulation) or the
    caller kept a reference, a fresh buffer is allocated as usual. The returned gradient is owned by autograd
    alone, so AccumulateGrad adopts it without a copy and hooks (DDP, post-accumulate) see an ordinary gradient.
    GPUs have a caching allocator: off there.
    """

    reuse_gradient_buffer = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._gradient_storage: torch.UntypedStorage | None = None

    def forward(self, ids: Tensor) -> Tensor:
        weight = self.weight
        if (self.reuse_gradient_buffer and weight.requires_grad and torch.is_grad_enabled()
                and weight.device.type == "cpu" and self.padding_idx is None and self.max_norm is None
                and not self.scale_grad_by_freq and not self.sparse):
            return _EmbeddingLookup.apply(ids, weight, self)
        return super().forward(ids)

    def gradient_buffer(self, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> Tensor:
        """A zeroed [V, D] tensor: on last step's storage when only this module still holds it, else new."""
        storage = self._gradient_storage
        numel = math.prod(shape)
        if (storage is not None and storage.device == device and _storage_use_count(storage) == 1
                and storage.nbytes() == numel * dtype.itemsize):
            return torch.empty(0, dtype=dtype, device=device).set_(storage, 0, shape).zero_()
        buffer = torch.zeros(shape, dtype=dtype, device=device)
        storage = buffer.untyped_storage()
        self._gradient_storage = storage if _storage_use_count(storage) is not None else None
        return buffer

    def _apply(self, fn, recurse=True):  # .to() / .half() / ...: the cached storage no longer matches
        self._gradient_storage = None
        return super()._apply(fn, recurse)

    def __getstate__(self):  # pickling / deepcopy: the cache is not part of the module
        state = super().__getstate__()
        return {**state, "_gradient_storage": None}
