"""A small cross-attention fusion encoder for token-level objectives (ITM, MLM), as in ALBEF's fusion layers.

Query tokens (usually text) run self-attention, then attend to the other modality's tokens, then an MLP;
pre-LayerNorm residual blocks. Self-contained so that the objectives do not depend on which fusion modules
exist; padding is respected on both sides through key_padding_mask.
"""

from __future__ import annotations

from torch import Tensor, nn


def ensure_one_real_token(mask: Tensor) -> Tensor:
    """mask [B, N] bool; rows with no real token get position 0 unmasked, so attention never yields NaN."""
    empty = ~mask.any(dim=1)
    if empty.any():
        mask = mask.clone()
        mask[empty, 0] = True
    return mask


class CrossModalLayer(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.norm_self = nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm_cross = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm_mlp = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width))

    def forward(self, query: Tensor, query_mask: Tensor, context: Tensor, context_mask: Tensor) -> Tensor:
        h = self.norm_self(query)
        query = query + self.self_attn(h, h, h, key_padding_mask=~query_mask, need_weights=False)[0]
        h = self.norm_cross(query)
        query = query + self.cross_attn(h, context, context, key_padding_mask=~context_mask, need_weights=False)[0]
        return query + self.mlp(self.norm_mlp(query))


class CrossModalEncoder(nn.Module):
    """query tokens [B, Nq, Dq] + context tokens [B, Nc, Dc] → fused query tokens [B, Nq, width]."""

    def __init__(self, query_dim: int, context_dim: int, width: int = 128, depth: int = 1, heads: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        if width % heads:
            raise ValueError(f"fusion width {width} must be divisible by heads {heads}")
        self.query_in = nn.Linear(query_dim, width)
        self.context_in = nn.Linear(context_dim, width)
        self.layers = nn.ModuleList([CrossModalLayer(width, heads, dropout=dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.width = width

    def forward(self, query: Tensor, query_mask: Tensor, context: Tensor, context_mask: Tensor) -> Tensor:
        query_mask = ensure_one_real_token(query_mask.bool())
        context_mask = ensure_one_real_token(context_mask.bool())
        q = self.query_in(query)
        c = self.context_in(context)
        for layer in self.layers:
            q = layer(q, query_mask, c, context_mask)
        return self.norm(q)


def pair_key(query: str, context: str) -> str:
    """ModuleDict key for a (query, context) modality pair (ModuleDict keys cannot contain dots)."""
    return f"{query}__{context}".replace(".", "_")
