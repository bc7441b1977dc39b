"""``build_encoder(ModalityConfig)``: the one way to make an encoder from config data."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

# "auto" (the tiny from-scratch preset of each kind, or "hf" with `pretrained`) is config data: the config layer
# names a config's encoder without importing encoders; re-exported here for existing callers.
from ..config import DEFAULT_PRESETS, HF_ENCODER, ModalityConfig, resolve_encoder_name  # noqa: F401
from ..registry import ENCODERS
from .base import Encoder
from .capacity import check_text_capacity

# Encoder options a preset can take from its modality's processor, so the two always agree
# (e.g. grayscale images → in_channels=1). An option set explicitly in cfg.options wins.
PROCESSOR_FACTS: dict[str, Callable[[Any], Any]] = {
    "in_channels": lambda processor: processor.config.channels,
    "image_size": lambda processor: processor.config.image_size,
    "n_mels": lambda processor: processor.n_mels,
    "vocab_size": lambda processor: processor.vocab_size,
    "pad_token_id": lambda processor: processor.pad_token_id,
}


def _accepted_options(factory: Callable[..., Any]) -> set[str]:
    return set(inspect.signature(factory).parameters)


def processor_options(cfg: ModalityConfig, factory: Callable[..., Any], where: str) -> dict[str, Any]:
    """Options the encoder accepts and the modality's processor determines (channels, mel bins, vocab)."""
    wanted = [key for key in PROCESSOR_FACTS if key in _accepted_options(factory) and key not in cfg.options]
    if not wanted:
        return {}
    try:
        from ..data import build_processor
    except ImportError:  # data layer unavailable: the encoder's own defaults apply
        return {}
    processor = build_processor(cfg, where)
    options = {}
    for key in wanted:
        try:
            options[key] = PROCESSOR_FACTS[key](processor)
        except AttributeError:
            continue
    return options


def build_encoder(cfg: ModalityConfig, load_weights: bool = True, *, name: str | None = None) -> Encoder:
    """Build the encoder of one modality.

    cfg.encoder: a registry name (``polymodal list encoders``) or "auto" ("hf" when cfg.pretrained is set,
    else the default preset of cfg.kind). cfg.options: constructor options. ``load_weights=False`` builds HF
    architectures from their config only (for MultimodalModel.from_pretrained, whose safetensors hold the
    weights). ``name`` is the modality name, used only to make error messages point at the config key.
    """
    where = f"model.modalities.{name or cfg.kind}"
    encoder_name = resolve_encoder_name(cfg)
    factory = ENCODERS.get(encoder_name)
    declared_kind = getattr(factory, "kind", "")
    if declared_kind and declared_kind != cfg.kind:
        raise ValueError(
            f"{where}: encoder {encoder_name!r} encodes {declared_kind} but the modality kind is {cfg.kind!r}; "
            f"pick a {cfg.kind} encoder ({', '.join(names_for_kind(cfg.kind))})"
        )
    options = dict(cfg.options)
    if encoder_name == HF_ENCODER:
        reserved = {"kind", "pretrained", "load_weights"} & set(options)
        if reserved:
            raise ValueError(f"{where}.options: {sorted(reserved)} are set by the modality config, not options")
        options.update(kind=cfg.kind, pretrained=cfg.pretrained, load_weights=load_weights)
    elif cfg.pretrained:
        raise ValueError(
            f"{where}: encoder {encoder_name!r} is trained from scratch and takes no `pretrained` checkpoint; "
            f"use encoder 'hf' (or 'auto') for Hugging Face checkpoints"
        )
    else:
        options = {**processor_options(cfg, factory, f"{name or cfg.kind}"), **options}
    encoder = ENCODERS.build(encoder_name, **options)
    if encoder.kind != cfg.kind:
        raise ValueError(f"{where}: encoder {encoder_name!r} built a {encoder.kind!r} encoder for kind {cfg.kind!r}")
    check_text_capacity(cfg, encoder, where)  # a processor max_length the encoder cannot take fails here, not in forward
    return encoder


def names_for_kind(kind: str) -> list[str]:
    """Registered encoders usable for ``kind`` ("hf" serves every kind)."""
    return [n for n in ENCODERS.names() if getattr(ENCODERS.get(n), "kind", "") in ("", kind)]


def preset_names(kind: str | None = None) -> list[str]:
    """Registered from-scratch presets (every encoder but "hf"), optionally of one kind."""
    return [
        n
        for n in ENCODERS.names()
        if n != HF_ENCODER and (kind is None or getattr(ENCODERS.get(n), "kind", "") == kind)
    ]
