"""Compatibility names: the warning about strategies that freeze randomly initialised encoders is config logic
and moved to :mod:`polymodal.config.finetune_warnings` (raised when a Config is read)."""

from __future__ import annotations

from ..config.finetune_warnings import (
    FinetuneWarning,
    untrained_frozen_encoders,
    warn_untrained_frozen_encoders,
)

__all__ = ["FinetuneWarning", "untrained_frozen_encoders", "warn_untrained_frozen_encoders"]
