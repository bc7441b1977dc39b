"""Gated Multimodal Unit (Arevalo et al., "Gated Multimodal Units for Information Fusion", ICLR-W 2017)."""

from __future__ import annotations

import torch
from torch import nn

from ..registry import FUSIONS
from ..types import FusedOutput, ModalityOutput
from .base import Fusion, check_option
from .masking import masked_softmax


@FUSIONS.register("gated")
class GatedFusion(Fusion):
    """GMU generalised to M modalities: [B, M, D] → [B, D].

    h_m = tanh(W_m x_m)                                   per-modality candidate   [B, D]
    g   = W_g [x_1; ...; x_M]  reshaped to [B, M, D]       one gate logit per modality and feature
    α   = softmax_m(g) over the PRESENT modalities         [B, M, D]
    h   = Σ_m α_m ⊙ h_m

    For M = 2 this is exactly the paper's z ⊙ h_1 + (1 − z) ⊙ h_2 with z = σ(g_1 − g_2). Absent modalities
    enter the gate input as zeros and get gate weight 0, so the present ones share the full weight; a sample
    with no modality gives zeros.

    Options: dropout (float, 0.0). output_dim = D.
    """

    def __init__(self, modalities: list[str], dim: int, dropout: float = 0.0):
        super().__init__(modalities, dim)
        check_option("gated", "dropout", dropout, "probability")
        count = len(self.modalities)
        self.candidates = nn.ModuleList(nn.Linear(dim, dim) for _ in range(count))
        self.gate = nn.Linear(count * dim, count * dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, outputs: dict[str, ModalityOutput]) -> FusedOutput:
        pooled, present = self.gather_pooled(outputs)  # [B, M, D], [B, M]
        batch, count, dim = pooled.shape
        hidden = torch.stack([torch.tanh(layer(pooled[:, m])) for m, layer in enumerate(self.candidates)], dim=1)
        gate_logits = self.gate(pooled.reshape(batch, count * dim)).view(batch, count, dim)
        alpha = masked_softmax(gate_logits, present.unsqueeze(-1), dim=1)
        return FusedOutput(pooled=self.dropout((alpha * hidden).sum(1)))
