"""Tensor Fusion Network (Zadeh et al., "Tensor Fusion Network for Multimodal Sentiment Analysis", EMNLP 2017)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..registry import FUSIONS
from ..types import FusedOutput, ModalityOutput
from .base import Fusion, check_option

# Beyond this many weights in the output layer, the full tensor is a mistake: point to low_rank_tensor.
MAX_TENSOR_WEIGHTS = 64_000_000


@FUSIONS.register("tensor")
class TensorFusion(Fusion):
    """Outer product of the modalities' (z_m; 1) vectors, flattened, then a linear layer to D.

    z_m = W_m x_m ∈ R^t (t = ``tensor_dim``)                                   [B, t]
    T   = (z_1; 1) ⊗ (z_2; 1) ⊗ ... ⊗ (z_M; 1)  flattened                        [B, (t+1)^M]
    out = Linear((t+1)^M → D)(Dropout(T))                                      [B, D]

    The appended 1 keeps every lower-order term in T: unimodal z_m and all pairwise products appear as
    sub-blocks. An absent modality has z_m = 0, i.e. (0; 1), so its factor only selects the terms without
    it and the others' unimodal and lower-order interactions survive.

    Options: tensor_dim (16), dropout (0.0). output_dim = D. The output layer has (t+1)^M · D weights:
    use low_rank_tensor for many modalities.
    """

    def __init__(self, modalities: list[str], dim: int, tensor_dim: int = 16, dropout: float = 0.0):
        super().__init__(modalities, dim)
        check_option("tensor", "tensor_dim", tensor_dim, "positive int")
        check_option("tensor", "dropout", dropout, "probability")
        features = (tensor_dim + 1) ** len(self.modalities)
        if features * dim > MAX_TENSOR_WEIGHTS:
            raise ValueError(
                f"fusion 'tensor': {len(self.modalities)} modalities with tensor_dim={tensor_dim} give a "
                f"{features}-dim tensor ({features * dim:,} output weights); lower tensor_dim or use 'low_rank_tensor'"
            )
        self.tensor_dim = tensor_dim
        self.projections = nn.ModuleList(nn.Linear(dim, tensor_dim) for _ in self.modalities)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(features, dim)

    def factors(self, outputs: dict[str, ModalityOutput]) -> list[Tensor]:
        """Per modality, (z_m; 1) [B, t+1] with z_m = 0 where the modality is absent."""
        pooled, present = self.gather_pooled(outputs)
        factors = []
        for m, projection in enumerate(self.projections):
            z = torch.where(present[:, m : m + 1], projection(pooled[:, m]), torch.zeros_like(pooled[:, m, :1]))
            factors.append(torch.cat([z, torch.ones_like(z[:, :1])], dim=-1))
        return factors

    @staticmethod
    def outer_product(factors: list[Tensor]) -> Tensor:
        """[B, a], [B, b], ... → flattened outer product [B, a·b·...], first factor's index varying slowest."""
        tensor = factors[0]
        for factor in factors[1:]:
            tensor = (tensor.unsqueeze(-1) * factor.unsqueeze(1)).flatten(1)
        return tensor

    def forward(self, outputs: dict[str, ModalityOutput]) -> FusedOutput:
        tensor = self.outer_product(self.factors(outputs))
        assert tensor.shape[1] == math.prod([self.tensor_dim + 1] * len(self.modalities))
        return FusedOutput(pooled=self.out(self.dropout(tensor)))
