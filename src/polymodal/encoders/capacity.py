"""Sequence capacity: how many tokens a text encoder takes, so that its processor never emits more.

The limit comes from the encoder: a Hugging Face config's ``max_position_embeddings`` (its learned position
table), the tokenizer's ``model_max_length`` (checked by the processor, which owns the tokenizer), a CLIP
``context_length`` or the from-scratch ``text_transformer``'s ``max_positions``. Two consequences:

- an explicit ``processor.max_length`` above the limit is a ConfigError naming the key, raised when the model is
  built (``check_text_capacity``, called by ``build_encoder``) and when the processor is built;
- an unset ``max_length`` means ``min(64, limit)`` (``DEFAULT_TEXT_LENGTH``), so longer texts are truncated
  instead of failing inside the encoder's forward pass.
"""

from __future__ import annotations

from typing import Any

from ..config import ConfigError, ModalityConfig

DEFAULT_TEXT_LENGTH = 64  # tokens, special tokens included: short captions / labels fit; raise it per modality
# Tokenizers with no declared limit report int(1e30) (transformers' VERY_LARGE_INTEGER).
UNBOUNDED = 10**9
# Model types whose position ids start at pad_token_id + 1 (the fairseq convention): RoBERTa's 514 positions
# hold 512 tokens. See transformers' create_position_ids_from_input_ids in modeling_roberta.py.
PADDING_OFFSET_MODEL_TYPES = frozenset({
    "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "data2vec-text", "xmod", "mpnet",
    "ibert", "roberta-prelayernorm", "luke", "markuplm",
})


def text_tower_config(config: Any) -> Any:
    """The text part of an HF config: a dual-tower's ``text_config`` (CLIP, SigLIP, CLAP), else the config."""
    return getattr(config, "text_config", None) or config


def position_capacity(config: Any) -> int | None:
    """Tokens the learned position table of an HF text config holds; None when there is no fixed table
    (relative-only DeBERTa-v2/v3 with ``position_biased_input=False``, T5's relative buckets)."""
    config = text_tower_config(config)
    if getattr(config, "position_biased_input", True) is False:
        return None
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        return None
    if getattr(config, "model_type", "") in PADDING_OFFSET_MODEL_TYPES:
        pad = getattr(config, "pad_token_id", None)
        limit -= (1 if pad is None else int(pad)) + 1
    return limit


def hf_text_capacity(pretrained: str, revision: str | None = None, trust_remote_code: bool = False) -> int | None:
    """``position_capacity`` of a checkpoint's config (read only; None when it cannot be read here)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(pretrained, revision=revision, trust_remote_code=trust_remote_code)
    except Exception:  # unreadable here (offline, remote code refused): the encoder build reports it
        return None
    return position_capacity(config)


def declared_text_capacity(cfg: ModalityConfig) -> tuple[int | None, str]:
    """(token limit, where it comes from) of the encoder ``cfg`` asks for, without building it.

    For "hf" the checkpoint's config; for a registered encoder with a ``token_capacity(options)`` classmethod,
    that. (None, "") when nothing declares a limit.
    """
    from ..registry import ENCODERS
    from .factory import HF_ENCODER, resolve_encoder_name

    name = resolve_encoder_name(cfg)
    if name == HF_ENCODER:
        if not cfg.pretrained:
            return None, ""
        trust = cfg.options.get("trust_remote_code") is True
        limit = hf_text_capacity(cfg.pretrained, cfg.options.get("revision"), trust)
        return limit, f"the position table of {cfg.pretrained} (max_position_embeddings)"
    if name not in ENCODERS:
        return None, ""
    capacity = getattr(ENCODERS.get(name), "token_capacity", None)
    if capacity is None:
        return None, ""
    return capacity(dict(cfg.options))


def resolve_max_length(requested: int | None, limits: list[tuple[int | None, str]], key: str) -> int:
    """The processor length: ``requested`` if it fits every limit, else ConfigError naming ``key``;
    unset → ``min(DEFAULT_TEXT_LENGTH, limits)``."""
    known = [(limit, source) for limit, source in limits if limit is not None and 0 < limit < UNBOUNDED]
    if requested is None:
        return min([DEFAULT_TEXT_LENGTH, *(limit for limit, _ in known)])
    for limit, source in known:
        if requested > limit:
            raise ConfigError(
                f"{key}: {requested} tokens asked, but the encoder takes at most {limit} ({source}); set "
                f"max_length to {limit} or less, or leave it unset (default min({DEFAULT_TEXT_LENGTH}, {limit}))"
            )
    return requested


def check_text_capacity(cfg: ModalityConfig, encoder: Any, where: str) -> None:
    """At model build: an explicit ``processor.max_length`` above the built encoder's ``max_tokens`` is a
    ConfigError naming ``<where>.processor.max_length`` (the tokenizer's own limit is checked by the processor)."""
    if cfg.kind != "text":
        return
    requested = (cfg.processor or {}).get("max_length")
    limit = getattr(encoder, "max_tokens", None)
    if limit is None or requested is None or isinstance(requested, bool):
        return
    try:
        requested = int(requested)
    except (TypeError, ValueError):
        return  # a malformed value is reported by the processor's own config validation
    source = getattr(encoder, "max_tokens_source", f"encoder {type(encoder).__name__}")
    resolve_max_length(requested, [(limit, source)], f"{where}.processor.max_length")
