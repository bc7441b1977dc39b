"""Threshold curves and rank-based AUC in plain numpy (no scikit-learn at runtime).

Inputs: ``y_true`` [N] class indices and ``probs`` [N, C]; curves are one-vs-rest per class.
Definitions match ``sklearn.metrics.roc_curve`` / ``roc_auc_score`` / ``precision_recall_curve``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_POINTS = 200  # curves stored in report.json are thinned to about this many points per class


def binary_roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC = P(score of a random positive > a random negative) + ½ P(tie) (Mann-Whitney U / (n⁺ n⁻)).

    Raises ValueError when ``y`` holds a single class (AUC undefined).
    """
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC-AUC is undefined when only one class is present")
    order = np.argsort(score, kind="mergesort")
    sorted_scores = np.asarray(score)[order]
    ranks = np.empty(len(score))
    # average ranks for ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_auc_ovr(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Macro one-vs-rest ROC-AUC over classes (binary [N, 2]: AUC of the positive column)."""
    y_true, probs = np.asarray(y_true).reshape(-1), np.asarray(probs)
    if probs.shape[1] == 2:
        return binary_roc_auc(y_true == 1, probs[:, 1])
    return float(np.mean([binary_roc_auc(y_true == k, probs[:, k]) for k in range(probs.shape[1])]))


def _thin(*arrays: np.ndarray) -> list[list[float]]:
    n = len(arrays[0])
    keep = np.unique(np.linspace(0, n - 1, min(n, MAX_POINTS)).round().astype(int)) if n else np.array([], int)
    return [np.asarray(a)[keep].astype(float).tolist() for a in arrays]


def _sorted_counts(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True / false positives at each distinct threshold, highest score first (sklearn's _binary_clf_curve)."""
    order = np.argsort(-score, kind="mergesort")
    score, y = score[order], y[order].astype(float)
    distinct = np.where(np.diff(score))[0]
    idx = np.r_[distinct, len(y) - 1]
    tps = np.cumsum(y)[idx]
    fps = 1 + idx - tps
    return tps, fps, score[idx]


def roc_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) starting at (0, 0), as sklearn.metrics.roc_curve(drop_intermediate=False)."""
    tps, fps, _ = _sorted_counts(np.asarray(y).astype(bool), np.asarray(score, dtype=float))
    tps, fps = np.r_[0, tps], np.r_[0, fps]
    return fps / max(fps[-1], 1), tps / max(tps[-1], 1)


def precision_recall_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) from the highest threshold down, ending at recall 1 (sklearn's points, reversed)."""
    tps, fps, _ = _sorted_counts(np.asarray(y).astype(bool), np.asarray(score, dtype=float))
    precision = tps / np.maximum(tps + fps, 1)
    recall = tps / max(tps[-1], 1)
    return np.r_[0, recall], np.r_[1, precision]


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """AP = Σ_n (R_n − R_{n−1}) P_n (sklearn.metrics.average_precision_score)."""
    recall, precision = precision_recall_curve(y, score)
    return float(np.sum(np.diff(recall) * precision[1:]))


def one_vs_rest_curves(y_true: np.ndarray, probs: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Per class: ROC (fpr, tpr, auc) and PR (recall, precision, average precision), thinned for JSON.

    Multi-hot ``y_true`` [N, C] uses each column as that label's truth. Classes absent from y_true (or
    present in every sample) are skipped: their curves are undefined.
    """
    y_true, probs = np.asarray(y_true), np.asarray(probs)
    roc, pr = {}, {}
    columns = range(probs.shape[1]) if probs.shape[1] > 2 or y_true.ndim == 2 else [1]
    for k in columns:
        y = y_true[:, k] >= 0.5 if y_true.ndim == 2 else y_true.reshape(-1) == k
        if y.all() or not y.any():
            continue
        name = labels[k] if k < len(labels) else str(k)
        fpr, tpr = roc_curve(y, probs[:, k])
        recall, precision = precision_recall_curve(y, probs[:, k])
        fpr_l, tpr_l = _thin(fpr, tpr)
        rec_l, prec_l = _thin(recall, precision)
        roc[name] = {"fpr": fpr_l, "tpr": tpr_l, "auc": binary_roc_auc(y, probs[:, k])}
        pr[name] = {"recall": rec_l, "precision": prec_l, "average_precision": average_precision(y, probs[:, k])}
    return {"roc": roc, "pr": pr}


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> list[list[int]]:
    """counts[i][j] = samples of true class i predicted as j."""
    flat = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes).tolist()


def per_class_prf(confusion: list[list[int]], labels: list[str]) -> dict[str, dict[str, float]]:
    """Per class precision / recall / F1 / support from a confusion matrix (0 where undefined)."""
    cm = np.asarray(confusion, dtype=float)
    tp, pred, true = np.diag(cm), cm.sum(0), cm.sum(1)
    precision = np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)
    recall = np.divide(tp, true, out=np.zeros_like(tp), where=true > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        name: {"precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]), "support": int(true[k])}
        for k, name in enumerate(labels)
    }


__all__ = [
    "binary_roc_auc",
    "roc_auc_ovr",
    "roc_curve",
    "precision_recall_curve",
    "average_precision",
    "one_vs_rest_curves",
    "confusion_matrix",
    "per_class_prf",
]
