"""Parameter-light elementwise fusions of pooled vectors: sum, mean over present, product."""

from __future__ import annotations

import torch
from torch import nn

from ..registry import FUSIONS
from ..types import FusedOutput, ModalityOutput
from .base import Fusion, check_option
from .masking import masked_mean


@FUSIONS.register("sum")
class SumFusion(Fusion):
    """Sum of the pooled vectors of the present modalities: [B, M, D] → [B, D]; absent ones add zero.

    Options: dropout (float, 0.0). output_dim = D.
    """

    def __init__(self, modalities: list[str], dim: int, dropout: float = 0.0):
        super().__init__(modalities, dim)
        check_option("sum", "dropout", dropout, "probability")
        self.dropout = nn.Dropout(dropout)

    def forward(self, outputs: dict[str, ModalityOutput]) -> FusedOutput:
        pooled, _ = self.gather_pooled(outputs)  # absent entries are exact zeros
        return FusedOutput(pooled=self.dropout(pooled.sum(1)))


@FUSIONS.register("mean")
class MeanFusion(Fusion):
    """Mean of the pooled vectors over the modalities each sample HAS: [B, M, D] → [B, D].

    Unlike sum, the scale does not shrink when a modality is missing. A sample with no modality gives zeros.
    Options: dropout (float, 0.0). output_dim = D.
    """

    def __init__(self, modalities: list[str], dim: int, dropout: float = 0.0):
        super().__init__(modalities, dim)
        check_option("mean", "dropout", dropout, "probability")
        self.dropout = nn.Dropout(dropout)

    def forward(self, outputs: dict[str, ModalityOutput]) -> FusedOutput:
        pooled, present = self.gather_pooled(outputs)
        return FusedOutput(pooled=self.dropout(masked_mean(pooled, present.unsqueeze(-1), dim=1)))


@FUSIONS.register("product")
class ProductFusion(Fusion):
    """Elementwise (Hadamard) product over the present modalities: [B, M, D] → [B, D].

    Multiplicative interactions as in bilinear pooling with a diagonal weight (cf. MLB, Kim et al.,
    ICLR 2017). An absent modality is the multiplicative identity (ones); a sample with no modality gives
    zeros. With ``normalize=True`` (default) each modality first goes through its own LayerNorm, so every
    factor has unit scale and the product neither explodes nor vanishes with M, and the gradient w.r.t. one
    factor (the product of the others) stays O(1).

    Options: normalize (bool, True), dropout (float, 0.0). output_dim = D.
    """

    def __init__(self, modalities: list[str], dim: int, normalize: bool = True, dropout: float = 0.0):
        super().__init__(modalities, dim)
        check_option("product", "dropout", dropout, "probability")
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in self.modalities) if normalize else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, outputs: dict[str, ModalityOutput]) -> FusedOutput:
        pooled, present = self.gather_pooled(outputs)  # [B, M, D], [B, M]
        product = torch.ones_like(pooled[:, 0])
        for m in range(len(self.modalities)):
            factor = pooled[:, m] if self.norms is None else self.norms[m](pooled[:, m])
            product = product * torch.where(present[:, m : m + 1], factor, torch.ones_like(factor))
        fused = torch.where(present.any(1, keepdim=True), product, torch.zeros_like(product))
        return FusedOutput(pooled=self.dropout(fused))
