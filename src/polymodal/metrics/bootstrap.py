"""Bootstrap confidence intervals and the paired bootstrap significance test.

Every resample draws N sample indices with replacement and applies them to ALL arrays (axis 0), so the
arrays stay aligned (y_true with its predictions). Metrics that are undefined on a resample (e.g. ROC-AUC
when a resample holds one class) are skipped and counted, never silently scored 0.

Vectorised metrics: a metric function with attribute ``vectorized = True`` receives the arrays with a
leading resample axis ([R, N, ...]) and returns [R] values: one call instead of R (see
:func:`accuracy_metric` / :func:`macro_f1_metric`).

Small-sample guards: a bootstrap distribution whose resamples all give the same value (3 correct answers out
of 3; two systems that differ on every sample in the same direction) carries no spread information, so
:func:`bootstrap_ci` warns (:class:`DegenerateBootstrapWarning`) and :func:`paired_bootstrap` never calls
such a difference significant. Bootstrap p-values are (1 + count) / (R + 1) (Davison & Hinkley 1997, eq. 4.11),
never 0. Exact alternatives for proportions and paired accuracy live in :mod:`polymodal.metrics.exact`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

METHODS = ("percentile", "basic", "bca")
# Resamples are drawn in chunks so a vectorised metric never holds more than ~this many elements at once.
_CHUNK_ELEMENTS = 20_000_000


class DegenerateBootstrapWarning(UserWarning):
    """Every bootstrap resample gave the same value: the interval has zero width and says nothing."""


def is_degenerate(values: np.ndarray) -> bool:
    """True when the finite resampled values are all equal (or there are none)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return finite.size == 0 or bool(np.ptp(finite) == 0)


def vectorized(fn: Callable) -> Callable:
    """Mark ``fn`` as taking arrays [R, N, ...] and returning [R] values."""
    fn.vectorized = True  # type: ignore[attr-defined]
    return fn


@vectorized
def accuracy_metric(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Accuracy from class indices; y_true / y_pred [N] or [R, N] → scalar or [R]."""
    return (np.asarray(y_true) == np.asarray(y_pred)).mean(axis=-1)


@vectorized
def macro_f1_metric(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Macro-F1 over the classes present in y_true or y_pred of each (re)sample, scikit-learn's default
    ``f1_score(average="macro", zero_division=0)`` (see classification.AVERAGE_POLICY).

    y_true / y_pred [N] or [R, N] int in [0, C) → scalar or [R]. C (the matrix size) defaults to max label + 1.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    squeeze = y_true.ndim == 1
    y_true, y_pred = np.atleast_2d(y_true), np.atleast_2d(y_pred)
    c = int(num_classes or max(y_true.max(), y_pred.max()) + 1)
    r = y_true.shape[0]
    # One bincount over (resample, true, pred) triples builds every resample's confusion matrix at once.
    flat = (np.arange(r)[:, None] * c * c + y_true * c + y_pred).ravel()
    confusion = np.bincount(flat, minlength=r * c * c).reshape(r, c, c).astype(np.float64)
    tp = np.diagonal(confusion, axis1=1, axis2=2)
    denom = confusion.sum(axis=2) + confusion.sum(axis=1)  # 2TP + FP + FN
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    present = denom > 0  # true or predicted at least once in this resample
    macro = (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    return macro[0] if squeeze else macro


def macro_f1_for(num_classes: int) -> Callable:
    """A vectorised macro-F1 with a ``num_classes`` × ``num_classes`` confusion matrix per resample (averaging
    over the classes present in that resample, like the point estimate)."""

    @vectorized
    def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        return macro_f1_metric(y_true, y_pred, num_classes)

    return macro_f1


def _resample_values(
    metric_fn: Callable, arrays: list[np.ndarray], n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Metric on ``n_resamples`` bootstrap resamples → [R] (NaN where the metric is undefined)."""
    n = arrays[0].shape[0]
    if getattr(metric_fn, "vectorized", False):
        per_sample = max(int(np.prod([a[0].size for a in arrays])), 1) * n
        chunk = max(1, _CHUNK_ELEMENTS // per_sample)
        values = []
        for start in range(0, n_resamples, chunk):
            idx = rng.integers(0, n, size=(min(chunk, n_resamples - start), n))
            values.append(np.asarray(metric_fn(*[a[idx] for a in arrays]), dtype=np.float64))
        return np.concatenate(values)
    values = np.empty(n_resamples)
    for r in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        try:
            values[r] = metric_fn(*[a[idx] for a in arrays])
        except ValueError:  # e.g. ROC-AUC on a resample with a single class: undefined, not zero
            values[r] = np.nan
    return values


def _check_arrays(arrays: tuple[Any, ...]) -> list[np.ndarray]:
    if not arrays:
        raise ValueError("bootstrap needs at least one array (e.g. y_true, y_pred)")
    out = [np.asarray(a) for a in arrays]
    n = out[0].shape[0] if out[0].ndim else 0
    for i, a in enumerate(out):
        if a.ndim == 0 or a.shape[0] != n:
            raise ValueError(f"array {i} has shape {a.shape}; every array needs the same first dim N={n}")
    if n == 0:
        raise ValueError("bootstrap needs at least one sample")
    return out


def _jackknife_acceleration(metric_fn: Callable, arrays: list[np.ndarray]) -> float:
    """BCa acceleration a = Σ (θ̄ − θ_i)³ / (6 (Σ (θ̄ − θ_i)²)^1.5) from leave-one-out values θ_i."""
    n = arrays[0].shape[0]
    keep = ~np.eye(n, dtype=bool)
    if getattr(metric_fn, "vectorized", False) and n * n <= _CHUNK_ELEMENTS:
        loo = np.asarray(metric_fn(*[a[np.nonzero(keep)[1].reshape(n, n - 1)] for a in arrays]), dtype=float)
    else:
        loo = np.array([_safe(metric_fn, [a[keep[i]] for a in arrays]) for i in range(n)])
    loo = loo[np.isfinite(loo)]
    diff = loo.mean() - loo
    denom = 6.0 * (diff**2).sum() ** 1.5
    return float((diff**3).sum() / denom) if denom > 0 else 0.0


def _safe(metric_fn: Callable, arrays: list[np.ndarray]) -> float:
    try:
        return float(metric_fn(*arrays))
    except ValueError:
        return float("nan")


def _interval(
    point: float, values: np.ndarray, confidence: float, method: str, metric_fn: Callable, arrays: list[np.ndarray]
) -> tuple[float, float]:
    alpha = 1.0 - confidence
    if method == "percentile":
        low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    elif method == "basic":  # reverse percentile: 2θ̂ − q(1−α/2), 2θ̂ − q(α/2)
        q_low, q_high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
        low, high = 2 * point - q_high, 2 * point - q_low
    else:  # bca (Efron 1987): percentiles shifted by bias z0 and acceleration a
        from scipy.stats import norm

        share_below = (values < point).mean() + 0.5 * (values == point).mean()
        z0 = norm.ppf(np.clip(share_below, 1e-6, 1 - 1e-6))
        a = _jackknife_acceleration(metric_fn, arrays)
        z = norm.ppf([alpha / 2, 1 - alpha / 2])
        adjusted = norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
        low, high = np.quantile(values, adjusted)
    return float(low), float(high)


def bootstrap_distribution(
    metric_fn: Callable, *arrays: Any, n_resamples: int = 1000, seed: int = 0
) -> tuple[float, np.ndarray]:
    """(metric on the full data, metric on each resample [R] with NaN for undefined resamples)."""
    checked = _check_arrays(arrays)
    point = float(metric_fn(*checked))
    rng = np.random.default_rng(seed)
    return point, _resample_values(metric_fn, checked, n_resamples, rng)


def bootstrap_ci(
    metric_fn: Callable,
    *arrays: Any,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    method: str = "percentile",
) -> tuple[float, float, float]:
    """Bootstrap confidence interval of ``metric_fn(*arrays)`` → (point, low, high).

    ``method``: "percentile" (quantiles of the resampled metric), "basic" (reverse percentile) or "bca"
    (bias-corrected and accelerated; costs N extra jackknife evaluations). Resamples where the metric raises
    ValueError are dropped; if more than half are, a ValueError says so. A degenerate distribution (every
    resample equal: a zero-width interval) raises a :class:`DegenerateBootstrapWarning`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown bootstrap method {method!r}; expected one of {METHODS}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    checked = _check_arrays(arrays)
    point, values = bootstrap_distribution(metric_fn, *checked, n_resamples=n_resamples, seed=seed)
    finite = values[np.isfinite(values)]
    if finite.size < n_resamples / 2:
        raise ValueError(
            f"the metric is undefined on {n_resamples - finite.size} of {n_resamples} bootstrap resamples "
            "(e.g. ROC-AUC with too few samples of a class); no interval"
        )
    if is_degenerate(finite):
        warnings.warn(f"degenerate bootstrap distribution: all {finite.size} resamples give {finite[0]:.4g} "
                      f"(n = {checked[0].shape[0]} samples); the interval has zero width and is not a real "
                      "confidence interval", DegenerateBootstrapWarning, stacklevel=2)
    low, high = _interval(point, finite, confidence, method, metric_fn, checked)
    return point, low, high


def paired_bootstrap(
    metric_fn: Callable,
    y_true: Any,
    pred_a: Any,
    pred_b: Any,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Paired bootstrap test of system A vs B on the same samples (Koehn 2004; Dror et al. 2018).

    ``metric_fn(y_true, pred)`` scores one system; both systems are scored on the SAME resampled indices.
    difference = metric(A) − metric(B). Two-sided p-value = 2 (1 + k) / (R + 1), capped at 1, where k counts the
    resamples whose difference has the opposite sign to (or equals 0 unlike) the observed one; an observed
    difference of exactly 0 gives p = 1. ``significant`` is p < alpha, and never when the distribution of
    differences is degenerate (``degenerate``: every resample gives the same difference, e.g. A right and B
    wrong on all of 3 samples; ``warnings`` then says so).
    """
    y, a, b = _check_arrays((y_true, pred_a, pred_b))
    rng = np.random.default_rng(seed)
    n = y.shape[0]
    if getattr(metric_fn, "vectorized", False):
        idx = rng.integers(0, n, size=(n_resamples, n))
        scores_a = np.asarray(metric_fn(y[idx], a[idx]), dtype=float)
        scores_b = np.asarray(metric_fn(y[idx], b[idx]), dtype=float)
    else:
        scores_a, scores_b = np.empty(n_resamples), np.empty(n_resamples)
        for r in range(n_resamples):
            idx = rng.integers(0, n, size=n)
            scores_a[r] = _safe(metric_fn, [y[idx], a[idx]])
            scores_b[r] = _safe(metric_fn, [y[idx], b[idx]])
    metric_a, metric_b = float(metric_fn(y, a)), float(metric_fn(y, b))
    observed = metric_a - metric_b
    deltas = scores_a - scores_b
    deltas = deltas[np.isfinite(deltas)]
    if deltas.size == 0:
        raise ValueError("the metric is undefined on every bootstrap resample; no test")
    if observed == 0:
        p_value = 1.0
    else:
        flipped = int((deltas <= 0).sum()) if observed > 0 else int((deltas >= 0).sum())
        p_value = float(min(1.0, 2.0 * (1 + flipped) / (deltas.size + 1)))
    low, high = np.quantile(deltas, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    degenerate = is_degenerate(deltas)
    notes = []
    if degenerate:
        notes.append(f"degenerate bootstrap: all {deltas.size} resamples give the difference {deltas[0]:+.4g} "
                     f"(n = {n} samples); the bootstrap says nothing about its spread, so no significance is claimed")
    return {
        "metric_a": metric_a,
        "metric_b": metric_b,
        "difference": observed,
        "ci_low": float(low),
        "ci_high": float(high),
        "confidence": confidence,
        "p_value": p_value,
        "alpha": alpha,
        "significant": bool(p_value < alpha and not degenerate),
        "degenerate": degenerate,
        "warnings": notes,
        "n_samples": int(n),
        "n_resamples": int(deltas.size),
    }


__all__ = [
    "DegenerateBootstrapWarning",
    "is_degenerate",
    "bootstrap_ci",
    "bootstrap_distribution",
    "paired_bootstrap",
    "vectorized",
    "accuracy_metric",
    "macro_f1_metric",
    "macro_f1_for",
]
