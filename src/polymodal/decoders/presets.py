"""Tiny from-scratch decoders that ARE Hugging Face architectures, so ``save_pretrained`` / ``from_pretrained``,
``generate`` and PEFT work exactly as for a downloaded checkpoint.

A preset is data: the keyword arguments of a transformers config class (``LlamaConfig`` for the Llama family:
RMSNorm, rotary positions, SwiGLU MLP, grouped-query attention — Touvron et al., 2023, arXiv:2302.13971).
Vocabulary size and the bos / eos / pad ids come from the tokenizer (``train_tokenizer``), never from the preset.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..config import ConfigError

DECODER_PRESETS: dict[str, dict[str, Any]] = {
    # ~0.1 M parameters without embeddings: unit tests and --quick demos on a CPU
    "tiny-llama": {
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
        "tie_word_embeddings": True,
    },
    # ~3 M parameters without embeddings: CPU-minutes demos
    "small-llama": {
        "model_type": "llama", "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024,
        "tie_word_embeddings": True,
    },
}


def decoder_preset_config(preset: str, tokenizer: Any, **overrides: Any) -> dict[str, Any]:
    """The config dict of ``preset`` with the tokenizer's vocabulary and special ids, then ``overrides``."""
    if preset not in DECODER_PRESETS:
        import difflib

        hint = difflib.get_close_matches(preset, DECODER_PRESETS, n=1)
        extra = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(f"unknown decoder preset {preset!r}.{extra} Available: {', '.join(sorted(DECODER_PRESETS))}")
    config = dict(DECODER_PRESETS[preset])
    config.update(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id)
    config.update(overrides)
    return config


def build_tiny_decoder(tokenizer: Any, preset: str = "tiny-llama", **overrides: Any) -> nn.Module:
    """A randomly initialised ``AutoModelForCausalLM`` (``LlamaForCausalLM`` for the built-in presets).

    ``overrides`` replace preset values (e.g. ``hidden_size=32``). Raises ConfigError for an unknown preset or
    model_type.
    """
    from .hf import causal_lm_from_config

    return causal_lm_from_config(decoder_preset_config(preset, tokenizer, **overrides), where=f"decoder preset {preset!r}")
