"""Modality encoders (registry ENCODERS): from-scratch presets and Hugging Face AutoModel backbones.

``build_encoder(ModalityConfig(kind="image", encoder="image_vit", options={"dim": 96}))`` builds one;
``polymodal list encoders`` lists them. Importing this package registers every encoder, the native CLIP
towers ``clip_vision`` / ``clip_text`` included (``registry.ENCODERS`` imports this package on first use, and
tests/contracts checks that every ``@ENCODERS.register`` in the source is reached).
"""

from . import audio, clip, hf, image, text  # noqa: F401  (registration side effects)
from .base import Encoder, masked_mean
from .factory import DEFAULT_PRESETS, build_encoder, names_for_kind, preset_names, resolve_encoder_name
from .hf import HFEncoder

__all__ = [
    "DEFAULT_PRESETS",
    "Encoder",
    "HFEncoder",
    "build_encoder",
    "masked_mean",
    "names_for_kind",
    "preset_names",
    "resolve_encoder_name",
]
