"""Configuration of a vision/audio-language model. The dataclasses live in the config layer
(:mod:`polymodal.config.generation`, the ``model`` section of the generation tasks); this module keeps the
names where the model code reads them."""

from __future__ import annotations

from ..config.generation import AttachmentConfig, DecoderConfig, VLMConfig

__all__ = ["AttachmentConfig", "DecoderConfig", "VLMConfig"]
