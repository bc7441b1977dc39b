"""LoRA on a decoder through PEFT (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", 2021,
arXiv:2106.09685): LLaVA's stage 2 option when full fine-tuning of the language model does not fit.

``apply_lora`` wraps a ``PreTrainedModel`` in a ``PeftModel`` (base weights frozen, only adapter weights train);
``merge_lora`` folds the adapters back into the base weights (W + B·A·alpha/r) and returns the plain model, which
then saves, loads and generates like any other decoder.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..config import ConfigError


def apply_lora(decoder: nn.Module, r: int = 8, alpha: int = 16, dropout: float = 0.0,
               target_modules: list[str] | str = "all-linear", **options: Any) -> nn.Module:
    """``peft.get_peft_model(decoder, LoraConfig(task_type="CAUSAL_LM", ...))``.

    ``target_modules="all-linear"`` adapts every linear layer except the output head (PEFT's rule). ``options`` go
    to ``LoraConfig`` (e.g. ``init_lora_weights=False`` for a non-zero start in tests). Raises ConfigError when
    PEFT is not installed.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise ConfigError("LoRA needs the peft package: pip install 'polymodal[peft]'") from err
    config = LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=target_modules, **options)
    return get_peft_model(decoder, config)


def is_peft_model(decoder: nn.Module) -> bool:
    return hasattr(decoder, "merge_and_unload") and hasattr(decoder, "peft_config")


def merge_lora(decoder: nn.Module) -> nn.Module:
    """The base model with the adapters merged in (a decoder without adapters comes back unchanged)."""
    return decoder.merge_and_unload() if is_peft_model(decoder) else decoder
