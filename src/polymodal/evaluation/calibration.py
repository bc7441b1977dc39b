"""Calibration metrics: ECE, MCE, classwise ECE, reliability-diagram data, Brier score, NLL.

Inputs everywhere: ``y_true`` [N] int class indices and ``probs`` [N, C] probabilities (rows sum to 1).
A 1-D ``probs`` [N] is read as the positive-class probability of a binary task and expanded to [N, 2].

Binning (equal width, as in Guo et al. 2017 and ``sklearn.calibration.calibration_curve``): ``n_bins`` bins
on [0, 1]; bin b holds confidences in (b/n, (b+1)/n], the first bin also holds 0.

Multi-label tasks (``y_true`` [N, C] in {0, 1}, independent sigmoid ``probs`` [N, C]) are handled by
:func:`calibration_report`, which treats every (sample, label) pair as one binary decision.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EPS = 1e-12


def _as_arrays(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2:
        raise ValueError(f"probs must be [N, C] (or [N] for binary), got shape {p.shape}")
    y = y.reshape(-1).astype(np.int64) if y.ndim == 2 and y.shape[1] == 1 else y.astype(np.int64)
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise ValueError(f"y_true must be [N] class indices matching probs [N, C]; got {y.shape} and {p.shape}")
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"y_true holds class index {int(y.max())} but probs has only {p.shape[1]} columns")
    return y, p


def _bin_ids(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index per confidence: bin b = (b/n, (b+1)/n], bin 0 also holds 0 (sklearn's convention)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], confidence)


def _binned(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> tuple[np.ndarray, ...]:
    """Per bin: (count [n_bins], mean confidence, accuracy); empty bins give NaN means."""
    ids = _bin_ids(confidence, n_bins)
    count = np.bincount(ids, minlength=n_bins).astype(np.float64)
    conf_sum = np.bincount(ids, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(ids, weights=correct.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return count, conf_sum / count, acc_sum / count


def _top_label(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    y, p = _as_arrays(y_true, probs)
    return p.max(axis=1), (p.argmax(axis=1) == y)


def _ece_from(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    count, conf, acc = _binned(confidence, correct, n_bins)
    nonempty = count > 0
    if not nonempty.any():
        return float("nan")
    gaps = np.abs(acc[nonempty] - conf[nonempty])
    return float((count[nonempty] / count.sum() * gaps).sum())


def expected_calibration_error(y_true: Any, probs: Any, n_bins: int = 15) -> float:
    """Top-label ECE = Σ_b (|B_b| / N) · |acc(B_b) − conf(B_b)|.

    conf = max_k p_k (the predicted class's probability), acc = whether argmax is the true class, bins as in
    the module docstring. 0 is perfectly calibrated, 1 the worst.
    """
    confidence, correct = _top_label(y_true, probs)
    return _ece_from(confidence, correct, n_bins)


def maximum_calibration_error(y_true: Any, probs: Any, n_bins: int = 15) -> float:
    """MCE = max over non-empty bins of |acc(B_b) − conf(B_b)| (top-label, same bins as ECE)."""
    confidence, correct = _top_label(y_true, probs)
    count, conf, acc = _binned(confidence, correct, n_bins)
    nonempty = count > 0
    return float(np.abs(acc[nonempty] - conf[nonempty]).max()) if nonempty.any() else float("nan")


def classwise_calibration_error(y_true: Any, probs: Any, n_bins: int = 15) -> float:
    """Classwise ECE (Kull et al. 2019): mean over classes k of the ECE of p_k against 1[y == k].

    For class k each sample contributes (p_ik, 1[y_i == k]) to the bin of p_ik; the per-class ECE is
    Σ_b (|B_b| / N) · |mean(1[y == k]) − mean(p_k)| over that class's bins.
    """
    y, p = _as_arrays(y_true, probs)
    per_class = [_ece_from(p[:, k], y == k, n_bins) for k in range(p.shape[1])]
    return float(np.mean(per_class))


def reliability_diagram(y_true: Any, probs: Any, n_bins: int = 15) -> dict[str, list]:
    """Reliability-diagram data (top-label): per bin its edges, mean confidence, accuracy and count.

    Returns JSON-ready lists: ``bin_edges`` [n_bins + 1], ``confidence`` / ``accuracy`` [n_bins] (None for
    empty bins) and ``count`` [n_bins].
    """
    confidence, correct = _top_label(y_true, probs)
    return _reliability_from(confidence, correct, n_bins)


def _reliability_from(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> dict[str, list]:
    count, conf, acc = _binned(confidence, correct, n_bins)
    clean = lambda values: [None if np.isnan(v) else float(v) for v in values]  # noqa: E731
    return {
        "bin_edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        "confidence": clean(conf),
        "accuracy": clean(acc),
        "count": count.astype(int).tolist(),
    }


def brier_score(y_true: Any, probs: Any) -> float:
    """Multiclass Brier score (Brier 1950): mean_i Σ_k (p_ik − 1[y_i = k])², in [0, 2].

    For a binary task given as two columns this is 2 × ``sklearn.metrics.brier_score_loss`` on the positive
    class (sklearn scores only one column).
    """
    y, p = _as_arrays(y_true, probs)
    onehot = np.eye(p.shape[1])[y]
    return float(((p - onehot) ** 2).sum(axis=1).mean())


def negative_log_likelihood(y_true: Any, probs: Any) -> float:
    """Mean negative log-likelihood of the true class: −mean_i log p_{i, y_i} (probabilities clipped at 1e-12)."""
    y, p = _as_arrays(y_true, probs)
    return float(-np.log(np.clip(p[np.arange(len(y)), y], EPS, 1.0)).mean())


def calibration_report(y_true: Any, probs: Any, task: str = "multiclass", n_bins: int = 15) -> dict[str, Any]:
    """All calibration metrics for one task as a JSON-ready dict.

    multiclass / binary: top-label ECE, MCE, classwise ECE, Brier, NLL and reliability data.
    multilabel: every (sample, label) pair is a binary decision with probability p_ik; the metrics are those
    of that flattened binary problem (Brier is then the mean of (p_ik − y_ik)² over pairs, NLL the mean
    binary cross-entropy).
    """
    if task == "multilabel":
        y_flat = np.asarray(y_true).astype(np.int64).reshape(-1)
        p_flat = np.asarray(probs, dtype=np.float64).reshape(-1)
        if y_flat.shape != p_flat.shape:
            raise ValueError(f"multilabel y_true and probs must share a shape; got {np.shape(y_true)} and {np.shape(probs)}")
        y_true, probs = y_flat, np.stack([1 - p_flat, p_flat], axis=1)
        brier = brier_score(y_true, probs) / 2.0
    elif task in ("multiclass", "binary"):
        brier = brier_score(y_true, probs)
    else:
        raise ValueError(f"unknown task {task!r}; expected multiclass, binary or multilabel")
    return {
        "n_bins": n_bins,
        "ece": expected_calibration_error(y_true, probs, n_bins),
        "mce": maximum_calibration_error(y_true, probs, n_bins),
        "classwise_ece": classwise_calibration_error(y_true, probs, n_bins),
        "brier": brier,
        "nll": negative_log_likelihood(y_true, probs),
        "reliability": reliability_diagram(y_true, probs, n_bins),
    }


__all__ = [
    "expected_calibration_error",
    "maximum_calibration_error",
    "classwise_calibration_error",
    "reliability_diagram",
    "brier_score",
    "negative_log_likelihood",
    "calibration_report",
]
