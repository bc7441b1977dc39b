"""Compatibility names: fine-tuning moved below the models.

The ``finetune`` config section (``FinetuneConfig``, ``parse_finetune_config``, strategy names and descriptions)
is plain data in :mod:`polymodal.config.finetune`; applying it to a built model (``apply_finetune``, freezing,
``load_encoder_weights``, parameter accounting) is :mod:`polymodal.peft`. Loading a model therefore never imports
training code. These re-exports keep ``from polymodal.training.finetune import ...`` working; new code imports
from the new homes.
"""

from __future__ import annotations

from ..config.finetune import (
    FREEZING_STRATEGIES,
    PEFT_STRATEGIES,
    STRATEGY_DESCRIPTIONS,
    FinetuneConfig,
    IA3Settings,
    LoraSettings,
    PromptSettings,
    Strategy,
    is_trivial,
    parse_finetune_config,
)
from ..peft.apply import apply_finetune, load_encoder_weights
from ..peft.freeze import _train_stays_eval, freeze_module, keep_in_eval, keep_norm_stats_frozen  # noqa: F401
from ..peft.summary import ComponentCount, FinetuneSummary, parameter_summary

__all__ = [
    "ComponentCount",
    "FREEZING_STRATEGIES",
    "FinetuneConfig",
    "FinetuneSummary",
    "IA3Settings",
    "LoraSettings",
    "PEFT_STRATEGIES",
    "PromptSettings",
    "STRATEGY_DESCRIPTIONS",
    "Strategy",
    "apply_finetune",
    "freeze_module",
    "is_trivial",
    "keep_in_eval",
    "keep_norm_stats_frozen",
    "load_encoder_weights",
    "parameter_summary",
    "parse_finetune_config",
]
