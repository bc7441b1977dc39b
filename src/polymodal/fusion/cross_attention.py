"""Bidirectional co-attention between modality streams (ViLBERT, Lu et al. 2019; LXMERT, Tan & Bansal 2019)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..registry import FUSIONS
from ..types import FusedOutput, ModalityOutput
from .attention import FeedForward, MultiHeadAttention
from .base import Fusion, check_option
from .masking import masked_mean


class CoAttentionLayer(nn.Module):
    """One LXMERT-style cross-modality layer for ONE stream (post-norm, BERT-style, as in both papers).

    x [B, N, D] ← LN(x + CrossAttn(x, others, others_mask))      queries from this stream, keys/values others
    x          ← LN(x + SelfAttn(x, x, mask))                    optional (LXMERT has it, ViLBERT's co-TRM not)
    x          ← LN(x + FFN(x))
    """

    def __init__(self, dim: int, heads: int, ffn_ratio: float, dropout: float, self_attention: bool):
        super().__init__()
        self.cross = MultiHeadAttention(dim, heads, dropout, owner="cross_attention")
        self.cross_norm = nn.LayerNorm(dim)
        self.self_attn = MultiHeadAttention(dim, heads, dropout, owner="cross_attention") if self_attention else None
        self.self_norm = nn.LayerNorm(dim) if self_attention else None
        self.ffn = FeedForward(dim, ffn_ratio, dropout)
        self.ffn_norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, context: Tensor, context_mask: Tensor) -> Tensor:
        x = self.cross_norm(x + self.drop(self.cross(x, context, context_mask)))
        if self.self_attn is not None:
            x = self.self_norm(x + self.drop(self.self_attn(x, x, mask)))
        x = self.ffn_norm(x + self.ffn(x))
        # Keep padded / absent positions exact zeros: they are the next layer's (masked) keys.
        return torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))


@FUSIONS.register("cross_attention")
class CrossAttentionFusion(Fusion):
    """Co-attention fusion: every modality's tokens attend to the other modalities' tokens, ``layers`` times.

    For each modality m (queries tokens [B, N_m, D]) the keys/values are the concatenation of the other
    modalities' tokens [B, Σ_{k≠m} N_k, D] with their key padding mask (absent samples fully masked). All
    streams update simultaneously from the previous layer (bidirectional). Each stream has its own weights.
    A stream whose partners are all absent for a sample gets a zero cross-attention update (residual only).

    pooled: masked mean of each modality's updated tokens [B, M, D], then ``pool="mean"`` over the present
    modalities → [B, D], or ``pool="concat"`` → [B, M·D] (zeros for absent).
    tokens: all streams' updated tokens concatenated [B, Σ N_m, D] with mask [B, Σ N_m].

    Options: layers (1), heads (4), ffn_ratio (2.0), dropout (0.1), self_attention (True), pool ("mean").
    output_dim = D (mean) or M·D (concat).
    """

    def __init__(self, modalities: list[str], dim: int, layers: int = 1, heads: int = 4, ffn_ratio: float = 2.0,
                 dropout: float = 0.1, self_attention: bool = True, pool: str = "mean"):
        super().__init__(modalities, dim)
        check_option("cross_attention", "layers", layers, "positive int")
        check_option("cross_attention", "dropout", dropout, "probability")
        if pool not in ("mean", "concat"):
            raise ValueError(f"fusion 'cross_attention': option 'pool' must be 'mean' or 'concat', got {pool!r}")
        self.pool = pool
        self.output_dim = dim if pool == "mean" else len(self.modalities) * dim
        self.streams = nn.ModuleList(
            nn.ModuleList(CoAttentionLayer(dim, heads, ffn_ratio, dropout, self_attention) for _ in range(layers))
            for _ in self.modalities
        )

    def forward(self, outputs: dict[str, ModalityOutput]) -> FusedOutput:
        views = self.gather_tokens(outputs)  # [(m, tokens [B, N_m, D], mask [B, N_m])]
        indices = [m for m, _, _ in views]
        tokens = [t for _, t, _ in views]
        masks = [k for _, _, k in views]
        for depth in range(len(self.streams[0])):
            updated = []
            for i, m in enumerate(indices):
                others = [j for j in range(len(indices)) if j != i]
                context = torch.cat([tokens[j] for j in others], 1) if others else tokens[i][:, :0]
                context_mask = torch.cat([masks[j] for j in others], 1) if others else masks[i][:, :0]
                updated.append(self.streams[m][depth](tokens[i], masks[i], context, context_mask))
            tokens = updated

        reference = tokens[0]
        batch = reference.shape[0]
        pooled = reference.new_zeros(batch, len(self.modalities), self.dim)
        valid = torch.zeros(batch, len(self.modalities), dtype=torch.bool, device=reference.device)
        for i, m in enumerate(indices):
            pooled[:, m] = masked_mean(tokens[i], masks[i].unsqueeze(-1), dim=1)
            valid[:, m] = masks[i].any(-1)
        fused = masked_mean(pooled, valid.unsqueeze(-1), dim=1) if self.pool == "mean" else pooled.flatten(1)
        return FusedOutput(pooled=fused, tokens=torch.cat(tokens, 1), mask=torch.cat(masks, 1))
