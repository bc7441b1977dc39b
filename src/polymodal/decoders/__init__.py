"""Causal language model decoders for the generative models.

- any Hugging Face ``AutoModelForCausalLM`` checkpoint, hub name or directory (:func:`load_causal_lm`), never
  running code shipped with it;
- tiny from-scratch presets that are Hugging Face architectures (:data:`DECODER_PRESETS`,
  :func:`build_tiny_decoder`), with a byte-level BPE tokenizer trained on the training texts
  (:func:`train_tokenizer`) and a documented default chat template (:data:`DEFAULT_CHAT_TEMPLATE`);
- LoRA through PEFT (:func:`apply_lora`, :func:`merge_lora`).
"""

from __future__ import annotations

from .hf import causal_lm_from_config, check_local_checkpoint, load_causal_lm
from .lora import apply_lora, is_peft_model, merge_lora
from .presets import DECODER_PRESETS, build_tiny_decoder, decoder_preset_config
from .tokenizer import (
    BOS_TOKEN,
    DEFAULT_CHAT_TEMPLATE,
    EOS_TOKEN,
    PAD_TOKEN,
    PLACEHOLDERS,
    ROLE_TOKENS,
    prepare_tokenizer,
    resize_decoder,
    train_tokenizer,
)

__all__ = [
    "BOS_TOKEN", "DEFAULT_CHAT_TEMPLATE", "DECODER_PRESETS", "EOS_TOKEN", "PAD_TOKEN", "PLACEHOLDERS", "ROLE_TOKENS",
    "apply_lora", "build_tiny_decoder", "causal_lm_from_config", "check_local_checkpoint", "decoder_preset_config",
    "is_peft_model", "load_causal_lm", "merge_lora", "prepare_tokenizer", "resize_decoder", "train_tokenizer",
]
