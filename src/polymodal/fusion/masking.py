"""NaN-free masked reductions shared by the fusions."""

from __future__ import annotations

import torch
from torch import Tensor


def masked_softmax(logits: Tensor, valid: Tensor, dim: int) -> Tensor:
    """Softmax over the ``valid`` entries only; a slice with no valid entry gives all zeros, never NaN.

    logits and valid broadcast together (e.g. logits [M] or [B, M, D], valid [B, M] or [B, M, 1]).
    Invalid entries are filled with the most negative finite value (not -inf, whose softmax is NaN when a
    whole slice is invalid, and whose NaN would also leak into the gradient through torch.where).
    """
    logits, valid = torch.broadcast_tensors(logits, valid)
    floor = torch.finfo(logits.dtype).min
    weights = torch.softmax(torch.where(valid, logits, torch.full_like(logits, floor)), dim=dim)
    weights = weights * valid.to(weights.dtype)
    return weights / weights.sum(dim=dim, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)


def masked_mean(values: Tensor, valid: Tensor, dim: int) -> Tensor:
    """Mean of ``values`` over ``dim`` where ``valid``; zeros where nothing is valid.

    values [..., K, ..., D] with valid broadcastable to it (e.g. tokens [B, N, D] with mask [B, N, 1]).
    """
    weights = valid.to(values.dtype)
    total = torch.where(valid, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum(dim)
    return total / (weights.sum(dim).clamp_min(1.0))
