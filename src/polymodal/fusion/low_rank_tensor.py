"""Low-rank Multimodal Fusion (Liu et al., "Efficient Low-rank Multimodal Fusion with Modality-Specific
Factors", ACL 2018)."""

from __future__ import annotations

import torch
from torch import nn

from ..registry import FUSIONS
from ..types import FusedOutput, ModalityOutput
from .base import Fusion, check_option


@FUSIONS.register("low_rank_tensor")
class LowRankTensorFusion(Fusion):
    """The TFN weight tensor factorised into rank-r modality-specific factors, never materialising the tensor.

    z_m      = (x_m; 1)                                    [B, D+1]   (absent modality: (0; 1))
    p_m^(i)  = z_m · W_m^(i),  W_m [r, D+1, D]             [B, r, D]
    h        = Σ_i λ_i ∏_m p_m^(i) + b                      [B, D]     (∏ elementwise over modalities)

    Cost is linear in M instead of exponential. Initialisation (ours, not the paper's xavier): the row of
    W_m that multiplies the constant 1 starts at ones, so at init an absent modality's factor is the
    multiplicative identity and a product of M factors keeps unit scale; the other rows are N(0, 1/(D+1)).

    Options: rank (4), dropout (0.0). output_dim = D.
    """

    def __init__(self, modalities: list[str], dim: int, rank: int = 4, dropout: float = 0.0):
        super().__init__(modalities, dim)
        check_option("low_rank_tensor", "rank", rank, "positive int")
        check_option("low_rank_tensor", "dropout", dropout, "probability")
        self.rank = rank
        self.factors = nn.ParameterList()
        for _ in self.modalities:
            factor = torch.randn(rank, dim + 1, dim) / (dim + 1) ** 0.5
            factor[:, -1, :] = 1.0
            self.factors.append(nn.Parameter(factor))
        self.rank_weights = nn.Parameter(torch.full((rank,), 1.0 / rank))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, outputs: dict[str, ModalityOutput]) -> FusedOutput:
        pooled, _ = self.gather_pooled(outputs)  # absent → exact zeros, so (x; 1) becomes (0; 1)
        ones = torch.ones_like(pooled[:, :, :1])
        z = torch.cat([pooled, ones], dim=-1)  # [B, M, D+1]
        product = None
        for m, factor in enumerate(self.factors):
            projected = torch.einsum("bi,rio->bro", z[:, m], factor.to(z.dtype))  # [B, r, D]
            product = projected if product is None else product * projected
        fused = torch.einsum("r,bro->bo", self.rank_weights.to(z.dtype), product) + self.bias
        return FusedOutput(pooled=self.dropout(fused))
