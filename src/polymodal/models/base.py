"""What every encoder-based polymodal model shares: its processors (built lazily from the modality configs, or the
ones the data went through, set by the train recipe) and its parameter accounting."""

from __future__ import annotations

from typing import Any


class ModalityModelMixin:
    """For an ``nn.Module`` with ``config.modalities`` and a ``_processors`` attribute (None until needed)."""

    _processors: dict[str, Any] | None

    @property
    def processors(self) -> dict[str, Any]:
        """Per-modality processors that turn raw inputs into this model's Batch tensors."""
        if self._processors is None:
            from ..data.processors import build_processors

            self._processors = build_processors(self.config.modalities)
        return self._processors

    def parameter_counts(self) -> dict[str, int | float]:
        """Total and trainable parameters and the trainable share."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"total": total, "trainable": trainable, "trainable_share": trainable / max(total, 1)}
