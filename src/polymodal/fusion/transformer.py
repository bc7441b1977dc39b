"""Early fusion: one joint Transformer over all modalities' tokens (cf. VATT / "single-stream" VisualBERT)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..registry import FUSIONS
from ..types import FusedOutput, ModalityOutput
from .attention import FeedForward, MultiHeadAttention
from .base import Fusion, check_option


class PreNormBlock(nn.Module):
    """x [B, N, D] ← x + Attn(LN(x)) with key padding mask; x ← x + FFN(LN(x)) (pre-norm, as in GPT-2/ViT)."""

    def __init__(self, dim: int, heads: int, ffn_ratio: float, dropout: float):
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads, dropout, owner="transformer")
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_ratio, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        normed = self.attn_norm(x)
        x = x + self.drop(self.attn(normed, normed, mask))
        return x + self.ffn(self.ffn_norm(x))


@FUSIONS.register("transformer")
class TransformerFusion(Fusion):
    """Single-stream early fusion: [CLS] + every modality's tokens (+ a learned modality-type embedding)
    through a joint pre-norm Transformer encoder, attention restricted by the token masks.

    sequence [B, 1 + Σ N_m, D]; pooled = final-LayerNorm CLS output [B, D]; tokens = the modality positions
    [B, Σ N_m, D] (zeros where masked) with mask [B, Σ N_m]. The CLS token is always a valid key, so a sample
    with no modality at all still has a finite (input-independent) output. No positional embedding is added:
    encoders already encode positions within their own modality.

    Options: layers (2), heads (4), ffn_ratio (2.0), dropout (0.1). output_dim = D.
    """

    def __init__(self, modalities: list[str], dim: int, layers: int = 2, heads: int = 4, ffn_ratio: float = 2.0,
                 dropout: float = 0.1):
        super().__init__(modalities, dim)
        check_option("transformer", "layers", layers, "positive int")
        check_option("transformer", "dropout", dropout, "probability")
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.type_embedding = nn.Parameter(torch.randn(len(self.modalities), dim) * 0.02)
        self.blocks = nn.ModuleList(PreNormBlock(dim, heads, ffn_ratio, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, outputs: dict[str, ModalityOutput]) -> FusedOutput:
        views = self.gather_tokens(outputs)
        zero = torch.zeros((), dtype=views[0][1].dtype, device=views[0][1].device)
        batch = views[0][1].shape[0]
        parts = [self.cls.expand(batch, 1, self.dim).to(views[0][1].dtype)]
        masks = [torch.ones(batch, 1, dtype=torch.bool, device=views[0][2].device)]
        for m, tokens, mask in views:
            # Type embedding only on real tokens, so masked positions stay exact zeros.
            parts.append(torch.where(mask.unsqueeze(-1), tokens + self.type_embedding[m], zero))
            masks.append(mask)
        x, mask = torch.cat(parts, 1), torch.cat(masks, 1)
        for block in self.blocks:
            x = torch.where(mask.unsqueeze(-1), block(x, mask), zero)
        x = self.norm(x)
        tokens = torch.where(mask[:, 1:].unsqueeze(-1), x[:, 1:], zero)
        return FusedOutput(pooled=x[:, 0], tokens=tokens, mask=mask[:, 1:])
