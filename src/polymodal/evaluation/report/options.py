"""What a report measures: :class:`ReportOptions` (bootstrap, robustness, efficiency settings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Corruptions tried per modality kind (see corruptions.CORRUPTIONS for the severity scale).
CORRUPTIONS_BY_KIND = {"image": ("gaussian_noise", "gaussian_blur"), "audio": ("audio_noise",), "text": ("token_dropout",)}


@dataclass
class ReportOptions:
    bootstrap: int = 1000  # resamples for the confidence intervals (0 = no intervals)
    confidence: float = 0.95
    seed: int = 0  # bootstrap resampling and corruption noise
    n_bins: int = 15  # calibration bins
    efficiency: bool = True
    robustness: bool = True
    severities: tuple[float, ...] = (0, 1, 3, 5)
    corruptions: tuple[str, ...] | None = None  # default: CORRUPTIONS_BY_KIND for the model's modalities
    efficiency_batch_sizes: tuple[int, ...] = (1, 32)
    warmup: int = 3
    repeats: int = 20
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)  # copied into meta.options (e.g. the CLI command)


__all__ = ["CORRUPTIONS_BY_KIND", "ReportOptions"]
