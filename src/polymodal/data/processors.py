"""Processor base class and factory: one processor per modality turns ONE raw input into tensors.

Every processor answers the same calls:

- ``processor(raw, augment=False) -> dict[str, Tensor]`` for one sample (no batch dim);
- ``processor.empty() -> dict[str, Tensor]``: placeholder tensors for a sample that lacks the modality;
- ``processor.collate(list_of_dicts) -> dict[str, Tensor]``: stack, padding variable lengths;
- ``processor.check(raw)``: a cheap validity check (file header, array shape) raising DataError;
- ``processor.save_pretrained(directory)``: write the files needed to rebuild it (tokenizer, feature extractor).

Keys per kind follow docs/ARCHITECTURE.md (``pixel_values``; ``features``/``feature_mask`` or the HF feature
extractor's keys; ``input_ids``/``attention_mask``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import ModalityConfig, from_dict


class Processor:
    """Base class. Subclasses set ``kind`` and implement ``__call__``, ``empty`` and ``check``."""

    kind: str = ""
    # Per output key, the value used to pad variable-length tensors in ``collate``.
    pad_values: dict[str, float] = {}

    def __call__(self, raw: Any, augment: bool = False) -> dict[str, Tensor]:
        raise NotImplementedError

    def empty(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def check(self, raw: Any) -> None:
        """Raise DataError when ``raw`` cannot be processed; must be cheap (no full decode of large files)."""

    def collate(self, samples: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Stack per-sample dicts into batch tensors [B, ...], right-padding every dim whose size varies."""
        if not samples:
            raise ValueError("collate needs at least one sample")
        return {key: pad_stack([s[key] for s in samples], self.pad_values.get(key, 0)) for key in samples[0]}

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write what is needed to rebuild this processor offline. Built-in processors need nothing."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return directory


def pad_stack(tensors: list[Tensor], pad_value: float = 0) -> Tensor:
    """Stack tensors of equal rank into [B, *max_shape], right-padding each dim with ``pad_value``."""
    first = tensors[0]
    if all(t.shape == first.shape for t in tensors):
        return torch.stack(tensors)
    if any(t.dim() != first.dim() for t in tensors):
        raise ValueError(f"cannot collate tensors of different ranks: {[tuple(t.shape) for t in tensors]}")
    max_shape = [max(t.shape[d] for t in tensors) for d in range(first.dim())]
    out = torch.full((len(tensors), *max_shape), pad_value, dtype=first.dtype)
    for i, t in enumerate(tensors):
        out[(i, *[slice(0, n) for n in t.shape])] = t
    return out


def parse_options(cls: type, options: dict[str, Any], prefix: str) -> Any:
    """Validate a free-form processor dict into dataclass ``cls``; unknown keys raise ConfigError naming them."""
    return from_dict(cls, dict(options or {}), prefix)


def build_processor(cfg: ModalityConfig, name: str | None = None) -> Processor:
    """The processor for one modality config. ``name`` (the modality name) only sharpens error messages.

    ``cfg.processor`` holds the options; unknown keys raise ConfigError naming
    ``model.modalities.<name>.processor.<key>``.
    """
    prefix = f"model.modalities.{name or cfg.kind}.processor"
    if cfg.kind == "image":
        from .image import ImageProcessor

        return ImageProcessor.from_config(cfg, prefix)
    if cfg.kind == "audio":
        from .audio import build_audio_processor

        return build_audio_processor(cfg, prefix)
    if cfg.kind == "text":
        from .text import build_text_processor

        return build_text_processor(cfg, prefix)
    raise ValueError(f"{prefix}: unknown modality kind {cfg.kind!r}; expected image, audio or text")


def build_processors(modalities: dict[str, ModalityConfig]) -> dict[str, Processor]:
    """One processor per modality name."""
    return {name: build_processor(mcfg, name) for name, mcfg in modalities.items()}
