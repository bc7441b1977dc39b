"""Configuration of a vision/audio-language model: pure dataclasses, validated by ``polymodal.config.from_dict``
(so a bad key or type raises ConfigError naming it) and saved as JSON inside a model directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigError, ModalityConfig, from_dict


@dataclass
class AttachmentConfig:
    """One attachment modality (``image``, ``audio``, or any name): encoder → connector → placeholder.

    placeholder:       the prompt token that each attachment replaces (default ``<{name}>``); one token
    connector:         a ``CONNECTORS`` name (``mlp``, ``resampler``); options in ``connector_options``
    encoder:           a polymodal encoder config (rebuilt on load); None = the caller supplies the module
    encoder_dim:       D_enc of the encoder's tokens; 0 = read the encoder's ``output_dim``
    freeze_encoder:    no gradients into the encoder (LLaVA keeps the vision tower frozen in both stages)
    """

    placeholder: str = ""
    connector: str = "mlp"
    connector_options: dict[str, Any] = field(default_factory=dict)
    encoder: ModalityConfig | None = None
    encoder_dim: int = 0
    freeze_encoder: bool = True


@dataclass
class DecoderConfig:
    """The causal LM: ``pretrained`` (hub name or directory of any ``AutoModelForCausalLM``) or, when None, the tiny
    ``preset`` (``decoders.DECODER_PRESETS``) with ``options`` overriding its config values."""

    pretrained: str | None = None
    revision: str | None = None
    preset: str = "tiny-llama"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class VLMConfig:
    """modalities: attachment name → AttachmentConfig; decoder; use_chat_template: format prompts with the
    tokenizer's chat template (False: ``bos + prompt + answer + eos``, for captioning-style models)."""

    modalities: dict[str, AttachmentConfig] = field(default_factory=dict)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    use_chat_template: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any], prefix: str = "vlm") -> VLMConfig:
        config = from_dict(cls, data, prefix)
        for name, attachment in config.modalities.items():
            if not attachment.placeholder:
                attachment.placeholder = f"<{name}>"
            if attachment.encoder_dim < 0:
                raise ConfigError(f"{prefix}.modalities.{name}.encoder_dim must be ≥ 0, got {attachment.encoder_dim}")
        placeholders = [a.placeholder for a in config.modalities.values()]
        if len(set(placeholders)) != len(placeholders):
            raise ConfigError(f"{prefix}.modalities: two modalities share a placeholder ({placeholders}); give each its own")
        return config
