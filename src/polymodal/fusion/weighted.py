"""Learned softmax modality weights, renormalised over the modalities each sample has."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..registry import FUSIONS
from ..types import FusedOutput, ModalityOutput
from .base import Fusion, check_option
from .masking import masked_softmax


@FUSIONS.register("weighted")
class WeightedFusion(Fusion):
    """Weighted sum of pooled vectors with learned modality weights: [B, M, D] → [B, D].

    weights = softmax(w) over the present modalities of each sample (w [M], or [M, D] per feature with
    ``per_feature=True``), i.e. w_m / Σ_{present} w_k after exponentiation; a sample with one modality gets
    that modality with weight 1, a sample with none gets zeros. (The weighted-average baseline of e.g.
    MultiBench, Liang et al. 2021, with missing-modality renormalisation.)

    Options: per_feature (bool, False), dropout (float, 0.0). output_dim = D.
    """

    def __init__(self, modalities: list[str], dim: int, per_feature: bool = False, dropout: float = 0.0):
        super().__init__(modalities, dim)
        check_option("weighted", "dropout", dropout, "probability")
        shape = (len(self.modalities), dim) if per_feature else (len(self.modalities), 1)
        self.logits = nn.Parameter(torch.zeros(shape))  # zeros: start from the plain mean
        self.dropout = nn.Dropout(dropout)

    def weights(self, present: Tensor) -> Tensor:
        """present [B, M] bool → weights [B, M, 1 or D], summing to 1 over present modalities (0 if none)."""
        return masked_softmax(self.logits.unsqueeze(0), present.unsqueeze(-1), dim=1)

    def modality_weights(self) -> dict[str, float]:
        """The learned weights when every modality is present (mean over features), for reports."""
        weights = torch.softmax(self.logits.detach().float(), dim=0).mean(-1)
        return {name: float(w) for name, w in zip(self.modalities, weights)}

    def forward(self, outputs: dict[str, ModalityOutput]) -> FusedOutput:
        pooled, present = self.gather_pooled(outputs)
        fused = (self.weights(present).to(pooled.dtype) * pooled).sum(1)
        return FusedOutput(pooled=self.dropout(fused))
