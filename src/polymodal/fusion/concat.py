"""Concatenation of pooled vectors: the classic early/intermediate fusion baseline."""

from __future__ import annotations

import torch
from torch import nn

from ..registry import FUSIONS
from ..types import FusedOutput, ModalityOutput
from .base import Fusion, check_option


@FUSIONS.register("concat")
class ConcatFusion(Fusion):
    """Concatenate the pooled vectors of all modalities in construction order: M × [B, D] → [B, M·D].

    An absent modality contributes zeros, or, with ``missing_embedding=True`` (default), a learned
    per-modality "missing" vector, so the head can tell "absent" from "present with small features"
    (the learned-placeholder trick of missing-modality work such as Ma et al., SMIL, AAAI 2021).

    Options: missing_embedding (bool, True), dropout (float, 0.0) on the fused vector.
    output_dim = M · D.
    """

    def __init__(self, modalities: list[str], dim: int, missing_embedding: bool = True, dropout: float = 0.0):
        super().__init__(modalities, dim)
        check_option("concat", "dropout", dropout, "probability")
        self.output_dim = len(self.modalities) * self.dim
        # Small init: at the start a missing modality looks almost like the old "zeros" behaviour.
        self.missing = nn.Parameter(torch.randn(len(self.modalities), dim) * 0.02) if missing_embedding else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, outputs: dict[str, ModalityOutput]) -> FusedOutput:
        pooled, present = self.gather_pooled(outputs)  # [B, M, D], [B, M]
        if self.missing is not None:
            pooled = torch.where(present.unsqueeze(-1), pooled, self.missing.to(pooled.dtype))
        return FusedOutput(pooled=self.dropout(pooled.flatten(1)))
