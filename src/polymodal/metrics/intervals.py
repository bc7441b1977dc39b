"""The report's confidence-interval entries: exact for proportions, guarded bootstrap for everything else.

Rule (stated in every report): accuracy-type metrics (k of n right) get the exact Clopper–Pearson interval for
EVERY n (3/3 right → [0.29, 1.0]; for large n it is close to the bootstrap's); other metrics (macro-F1, ROC-AUC,
ECE, retrieval means) get a percentile bootstrap, and a degenerate one (every resample equal: a zero-width
interval) is flagged with ``degenerate`` and a ``note`` instead of being presented as a real interval.
An entry is ``{"point", "low", "high", "method"[, "degenerate", "note"]}``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from .bootstrap import DegenerateBootstrapWarning, bootstrap_ci
from .exact import clopper_pearson

PROPORTION_CI = "clopper-pearson"  # accuracy-type metrics (k of n right): exact interval, whatever n


def guarded_bootstrap_ci(fn: Callable, arrays: tuple, n_resamples: int, confidence: float = 0.95, seed: int = 0
                         ) -> dict[str, Any]:
    """Percentile bootstrap entry of ``fn(*arrays)`` (arrays share their first dim N). A metric undefined on
    most resamples gives point/low/high None with the reason in ``note``; a degenerate one keeps its zero-width
    numbers with ``degenerate: True`` and the reason."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateBootstrapWarning)
        try:
            point, low, high = bootstrap_ci(fn, *arrays, n_resamples=n_resamples, confidence=confidence, seed=seed)
        except ValueError as err:  # e.g. ROC-AUC undefined on most resamples: say so instead of a number
            return {"point": None, "low": None, "high": None, "note": str(err)}
    entry: dict[str, Any] = {"point": point, "low": low, "high": high, "method": "percentile"}
    degenerate = [str(w.message) for w in caught if issubclass(w.category, DegenerateBootstrapWarning)]
    if degenerate:
        entry.update(degenerate=True, note=degenerate[0])
    return entry


def proportion_ci(k: int, n: int, confidence: float = 0.95) -> dict[str, Any]:
    """Clopper–Pearson entry for k successes in n trials (see :mod:`polymodal.metrics.exact`)."""
    low, high = clopper_pearson(int(k), int(n), confidence)
    return {"point": k / n, "low": low, "high": high, "method": PROPORTION_CI,
            "note": f"exact binomial interval of {int(k)} of {int(n)}"}


__all__ = ["PROPORTION_CI", "guarded_bootstrap_ci", "proportion_ci"]
