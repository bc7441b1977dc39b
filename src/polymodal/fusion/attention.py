"""Attention building blocks (scaled_dot_product_attention) that stay finite when every key is masked."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import check_option


class MultiHeadAttention(nn.Module):
    """Multi-head attention with a key padding mask.

    forward(query [B, Nq, D], context [B, Nk, D], context_mask [B, Nk] bool, True = attend) → [B, Nq, D].
    A query row whose keys are ALL masked (the other side is absent for that sample) gets exactly zero
    output instead of SDPA's NaN, so the caller's residual leaves it unchanged.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, owner: str = "attention"):
        super().__init__()
        check_option(owner, "heads", heads, "positive int")
        if dim % heads:
            raise ValueError(f"fusion {owner!r}: dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, query: Tensor, context: Tensor, context_mask: Tensor) -> Tensor:
        batch, n_query, dim = query.shape
        if context.shape[1] == 0:  # nothing to attend to at all
            return torch.zeros_like(query)
        has_key = context_mask.any(-1)  # [B]
        # Rows with no valid key would softmax over all -inf (NaN): let them attend everywhere (the caller
        # zeroes masked context tokens, so this is finite and data-independent) and zero the result below.
        attend = context_mask | ~has_key.unsqueeze(-1)

        def split(x: Tensor) -> Tensor:  # [B, N, D] → [B, H, N, D/H]
            return x.view(batch, x.shape[1], self.heads, dim // self.heads).transpose(1, 2)

        key, value = self.key_value(context).chunk(2, dim=-1)
        attended = F.scaled_dot_product_attention(
            split(self.query(query)),
            split(key),
            split(value),
            attn_mask=attend[:, None, None, :],
            dropout_p=self.dropout if self.training else 0.0,
        )
        attended = self.out(attended.transpose(1, 2).reshape(batch, n_query, dim))
        return attended * has_key.to(attended.dtype)[:, None, None]


class FeedForward(nn.Sequential):
    """Position-wise MLP: [B, N, D] → Linear(D, ratio·D) → GELU → Dropout → Linear(ratio·D, D) → Dropout."""

    def __init__(self, dim: int, ffn_ratio: float = 4.0, dropout: float = 0.0):
        hidden = max(1, int(round(dim * ffn_ratio)))
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                         nn.Dropout(dropout))
