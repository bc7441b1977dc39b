"""The result of a generation metric: the corpus value, per-sample scores and what a bootstrap resamples."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..bootstrap import bootstrap_ci, vectorized
from ._inputs import MetricInputError


@vectorized
def mean_of_samples(scores: np.ndarray) -> np.ndarray:
    """Mean over the sample axis: scores [N] or [R, N] → scalar or [R]."""
    return np.asarray(scores, dtype=np.float64).mean(axis=-1)


@dataclass(frozen=True)
class MetricResult:
    """One metric on one corpus.

    ``value``: the corpus score as the reference implementation reports it. ``per_sample`` [N]: each
    sample's own score (for BLEU the sentence BLEU, for WER the sentence WER; NaN where undefined).
    ``stats`` [N, K] and ``aggregate``: the per-sample sufficient statistics and the vectorised function that
    turns them (or a resample of them, [R, N, K]) into the corpus value. A bootstrap resamples rows of
    ``stats`` so it reproduces the corpus definition exactly (corpus BLEU is not the mean of sentence BLEU).
    ``aggregate`` is None when the corpus value cannot be recomputed from per-sample data (METEOR).
    """

    name: str
    value: float
    per_sample: np.ndarray
    stats: np.ndarray
    aggregate: Callable[[np.ndarray], np.ndarray] | None = mean_of_samples
    notes: dict[str, str] = field(default_factory=dict)

    def bootstrap_ci(
        self, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0, method: str = "percentile"
    ) -> tuple[float, float, float]:
        """(point, low, high) of ``value`` by resampling samples (rows of ``stats``); see
        :func:`polymodal.metrics.bootstrap.bootstrap_ci`. Raises :class:`MetricInputError` when the
        metric has no resample-able aggregate."""
        if self.aggregate is None:
            raise MetricInputError(
                f"{self.name}: the corpus value is not a function of per-sample statistics, so it has no "
                "bootstrap interval; report per_sample.mean() with its own interval instead"
            )
        return bootstrap_ci(
            self.aggregate,
            self.stats,
            n_resamples=n_resamples,
            confidence=confidence,
            seed=seed,
            method=method,
        )

    def as_dict(self) -> dict[str, float]:
        return {self.name: float(self.value)}
