"""Perceiver resampler: a fixed number of learned queries read any number of encoder tokens.

Alayrac et al., "Flamingo: a Visual Language Model for Few-Shot Learning" (2022, arXiv:2204.14198), §2.1 and
Appendix A.1.1 (Perceiver Resampler): learned latents ``x`` attend to the concatenation of the encoder features and
themselves, ``x = x + Attn(q=LN(x), kv=[LN(f); LN(x)])``, then ``x = x + FFN(LN(x))``, repeated ``depth`` times.
BLIP-2's Q-Former (Li et al., 2023, arXiv:2301.12597) uses the same idea — a fixed set of learned queries with
cross-attention to the frozen image encoder — inside a BERT; here the queries' self-attention is the latents
half of the key/value set. Attending to the latents as well also means a sample whose encoder tokens are all
padding still has something to attend to (no NaN from an all-masked softmax).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..registry import CONNECTORS
from .base import Connector, ConnectorOutput


class ResamplerBlock(nn.Module):
    """One pre-norm cross-attention + FFN block. latents [B, M, W], features [B, N, W], pad [B, N] (True = pad)."""

    def __init__(self, width: int, heads: int, ffn_mult: int, dropout: float):
        super().__init__()
        self.norm_features = nn.LayerNorm(width)
        self.norm_latents = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm_ffn = nn.LayerNorm(width)
        self.ffn = nn.Sequential(
            nn.Linear(width, width * ffn_mult), nn.GELU(), nn.Linear(width * ffn_mult, width), nn.Dropout(dropout)
        )

    def forward(self, latents: Tensor, features: Tensor, pad: Tensor) -> Tensor:
        query = self.norm_latents(latents)
        keys = torch.cat([self.norm_features(features), query], dim=1)
        key_pad = torch.cat([pad, torch.zeros(pad.shape[0], latents.shape[1], dtype=torch.bool, device=pad.device)], 1)
        attended, _ = self.attention(query, keys, keys, key_padding_mask=key_pad, need_weights=False)
        latents = latents + attended
        return latents + self.ffn(self.norm_ffn(latents))


@CONNECTORS.register("resampler")
class PerceiverResampler(Connector):
    """Learned queries + cross-attention + FFN blocks (Flamingo's Perceiver Resampler, BLIP-2 Q-Former style).

    tokens [B, N, D_enc], mask [B, N] → tokens [B, M, D_lm], mask [B, M] with M = ``num_tokens`` whatever N is.
    The output mask is True for every query of a sample that has at least one real input token, all False (and
    the tokens zero) for an absent sample. Padding tokens never influence the output (key padding mask).

    Options: ``num_tokens`` M (default 32; Flamingo uses 64, BLIP-2 32), ``depth`` blocks (default 2; Flamingo 6),
    ``heads`` (default 4; must divide the width), ``width`` of the blocks (default D_lm), ``ffn_mult`` (4),
    ``dropout`` (0.0).
    """

    def __init__(self, input_dim: int, output_dim: int, num_tokens: int = 32, depth: int = 2, heads: int = 4,
                 width: int | None = None, ffn_mult: int = 4, dropout: float = 0.0):
        super().__init__(input_dim, output_dim)
        width = output_dim if width is None else width
        for key, value in (("num_tokens", num_tokens), ("depth", depth), ("heads", heads), ("width", width),
                           ("ffn_mult", ffn_mult)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"PerceiverResampler: {key} must be a positive integer, got {value!r}")
        if width % heads:
            raise ValueError(f"PerceiverResampler: heads ({heads}) must divide width ({width}); pick e.g. heads=1")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"PerceiverResampler: dropout must be in [0, 1), got {dropout!r}")
        self.num_queries = num_tokens
        self.input_proj = nn.Linear(input_dim, width)
        # small init as in Flamingo's open implementations: queries start near the origin, LayerNorm rescales them
        self.queries = nn.Parameter(torch.randn(num_tokens, width) * 0.02)
        self.blocks = nn.ModuleList(ResamplerBlock(width, heads, ffn_mult, float(dropout)) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.output_proj = nn.Linear(width, output_dim)

    def num_tokens(self, num_input_tokens: int) -> int:
        return self.num_queries

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> ConnectorOutput:
        mask = self.check_inputs(tokens, mask)
        batch = tokens.shape[0]
        # zero the padding before projecting: attention ignores it, but NaN/inf garbage would survive 0-weighting
        features = self.input_proj(tokens.masked_fill(~mask.unsqueeze(-1), 0.0))
        latents = self.queries.unsqueeze(0).expand(batch, -1, -1)
        for block in self.blocks:
            latents = block(latents, features, ~mask)
        out = self.output_proj(self.norm(latents))
        present = mask.any(dim=1)
        out_mask = present.unsqueeze(1).expand(batch, self.num_queries).contiguous()
        return ConnectorOutput(tokens=out.masked_fill(~out_mask.unsqueeze(-1), 0.0), mask=out_mask)
