"""Fusion modules: dict[name, ModalityOutput] → FusedOutput. Importing this package registers them all.

Registered in ``polymodal.registry.FUSIONS``: concat, sum, mean, product, weighted, gated, cross_attention,
tensor, low_rank_tensor, transformer. ("late" fusion, per-modality heads with averaged logits, lives in
MultimodalModel because it needs one head per modality.)
"""

from __future__ import annotations

from typing import Any

from ..registry import FUSIONS
from .base import Fusion
from .concat import ConcatFusion
from .cross_attention import CrossAttentionFusion
from .elementwise import MeanFusion, ProductFusion, SumFusion
from .gated import GatedFusion
from .low_rank_tensor import LowRankTensorFusion
from .tensor import TensorFusion
from .transformer import TransformerFusion
from .weighted import WeightedFusion


def build_fusion(name: str, modalities: list[str], dim: int, **options: Any) -> Fusion:
    """``FUSIONS.build(name, modalities=..., dim=..., **options)`` with a typed return."""
    return FUSIONS.build(name, modalities=modalities, dim=dim, **options)


__all__ = [
    "Fusion",
    "build_fusion",
    "ConcatFusion",
    "SumFusion",
    "MeanFusion",
    "ProductFusion",
    "WeightedFusion",
    "GatedFusion",
    "CrossAttentionFusion",
    "TensorFusion",
    "LowRankTensorFusion",
    "TransformerFusion",
]
