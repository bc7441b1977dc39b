"""Alignment objectives (registry ``OBJECTIVES``): clip, siglip, itm, mlm. Importing registers them."""

from ..registry import OBJECTIVES
from .accumulation import LossTerm, combine
from .base import ModalitySpec, Objective, ObjectiveSetup, PairInputs, zero_loss
from .contrastive import ClipObjective, SigLipObjective, clip_loss, siglip_loss
from .distributed import all_gather_rows, world_info
from .masked_lm import MaskedLanguageObjective, mask_tokens
from .matching import MatchingObjective, sample_hard_negatives

__all__ = [
    "OBJECTIVES",
    "LossTerm",
    "combine",
    "ModalitySpec",
    "Objective",
    "ObjectiveSetup",
    "PairInputs",
    "zero_loss",
    "ClipObjective",
    "SigLipObjective",
    "clip_loss",
    "siglip_loss",
    "all_gather_rows",
    "world_info",
    "MaskedLanguageObjective",
    "mask_tokens",
    "MatchingObjective",
    "sample_hard_negatives",
]
