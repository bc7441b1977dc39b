"""Classification metrics with scikit-learn's definitions, written in numpy (no scikit-learn at runtime).

Inputs:
  multiclass  ``y_true`` [N] int class indices, ``probs`` [N, C] (rows sum to 1), ``y_pred`` [N] int
  binary      ``y_true`` [N] (or [N, 1]) in {0, 1}, ``probs`` [N, 2] (negative, positive) or [N] positive prob.
  multilabel  ``y_true`` [N, C] in {0, 1}, ``probs`` [N, C] independent sigmoids, ``y_pred`` [N, C] in {0, 1}

Conventions follow ``sklearn.metrics`` with ``zero_division=0``: a precision / recall / F1 whose denominator is 0
is 0; F1 = 2·TP / (2·TP + FP + FN).

Classes without support (policy, stated in every report under ``average_policy``): macro averages run over the
classes that occur in the targets OR the predictions, scikit-learn's default ``labels=unique_labels(y_true,
y_pred)``. A class that is predicted but never true still counts (precision 0 pulls the average down); a class
that is neither true nor predicted is left out instead of counting as an F1 of 0. Multi-label columns follow the
same rule (a column counts when it has a true or a predicted positive), which equals sklearn with ``labels=`` those
columns (sklearn's own multi-label default would count an all-empty column as 0). Every listed class keeps its
per-class row; ``no_support_classes`` names those with no true sample and ``unused_classes`` those left out of the
macro averages. Weighted and micro averages are unaffected (a class without support has weight 0).

ROC-AUC uses the rank (Mann–Whitney) form, identical to the trapezoidal ROC area with ties; a class whose ROC
curve is undefined (only one kind of label present) is reported as None and left out of the averages.
"""


from __future__ import annotations

from typing import Any

import numpy as np
import torch

TASKS = ("multiclass", "binary", "multilabel")
AVERAGE_POLICY = ("macro averages over the classes present in the targets or the predictions (scikit-learn's "
                  "default); classes with no true and no predicted sample are left out, per-class rows keep them")


def _numpy(values: Any, dtype: Any = None) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy() if values.is_floating_point() else values.cpu().numpy()
    array = np.asarray(values)
    return array.astype(dtype) if dtype is not None else array


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (sklearn's zero_division=0)."""
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


# ---------------------------------------------------------------------------------------------- single-label


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Share of exact matches; for [N, C] multi-label arrays this is subset accuracy (whole rows must match)."""
    t, p = _numpy(y_true), _numpy(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} must have the same shape")
    if t.size == 0:
        raise ValueError("accuracy of an empty set is undefined")
    match = t == p if t.ndim == 1 else (t == p).all(axis=1)
    return float(match.mean())


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int | None = None) -> np.ndarray:
    """[C, C] counts; row = true class, column = predicted class (sklearn's layout)."""
    t, p = _numpy(y_true).astype(np.int64).ravel(), _numpy(y_pred).astype(np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} entries but y_pred has {p.size}")
    c = num_classes if num_classes is not None else int(max(t.max(initial=-1), p.max(initial=-1)) + 1)
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= c):
        raise ValueError(f"class indices must lie in [0, {c}); got y_true {np.unique(t)} and y_pred {np.unique(p)}")
    return np.bincount(t * c + p, minlength=c * c).reshape(c, c)


def _scores_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, Any]:
    """Per-class precision, recall, F1, support [C] and their macro / micro / weighted averages.

    The macro average runs over the classes with tp + fp + fn > 0 (true or predicted at least once: see the
    module docstring); ``averaged`` [C] bool marks them.
    """
    support = tp + fn
    averaged = (tp + fp + fn) > 0
    per_class = {
        "precision": _safe_divide(tp, tp + fp),
        "recall": _safe_divide(tp, support),
        "f1": _safe_divide(2 * tp, 2 * tp + fp + fn),
        "support": support.astype(np.int64),
    }
    total = int(support.sum())
    micro = {
        "precision": float(_safe_divide(tp.sum(), tp.sum() + fp.sum())),
        "recall": float(_safe_divide(tp.sum(), total)),
        "f1": float(_safe_divide(2 * tp.sum(), 2 * tp.sum() + fp.sum() + fn.sum())),
        "support": total,
    }
    macro = {k: float(per_class[k][averaged].mean()) if averaged.any() else 0.0 for k in ("precision", "recall", "f1")}
    weighted = {k: float(_safe_divide((per_class[k] * support).sum(), total)) for k in ("precision", "recall", "f1")}
    return {
        "per_class": per_class,
        "averaged": averaged,
        "macro_avg": {**macro, "support": total},
        "micro_avg": micro,
        "weighted_avg": {**weighted, "support": total},
    }


def precision_recall_f1(y_true: Any, y_pred: Any, num_classes: int | None = None) -> dict[str, Any]:
    """Per-class arrays (``per_class``: precision/recall/f1/support [C]) and macro/micro/weighted averages."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm)
    return _scores_from_counts(tp, cm.sum(axis=0) - tp, cm.sum(axis=1) - tp)


# ---------------------------------------------------------------------------------------------- ROC-AUC


def _midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their average rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse.ravel()]


def roc_auc_binary(y_true: Any, scores: Any) -> float | None:
    """Area under the ROC curve of scores [N] for labels [N] in {0, 1}; None when only one label occurs."""
    y, s = _numpy(y_true).ravel().astype(bool), _numpy(scores, np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels have {y.size} entries but scores have {s.size}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = _midranks(s)[y].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_auc_per_column(y_true_onehot: Any, scores: Any) -> dict[str, Any]:
    """One-vs-rest AUC per column of [N, C] indicators vs [N, C] scores; macro and support-weighted averages
    over the columns where the AUC is defined (sklearn's ``multi_class="ovr"`` / multi-label averages)."""
    y, s = _numpy(y_true_onehot).astype(bool), _numpy(scores, np.float64)
    per_class = [roc_auc_binary(y[:, c], s[:, c]) for c in range(s.shape[1])]
    defined = [c for c, value in enumerate(per_class) if value is not None]
    values = np.array([per_class[c] for c in defined])
    support = y.sum(axis=0)[defined].astype(float)
    return {
        "per_class": per_class,
        "macro": float(values.mean()) if defined else None,
        "weighted": float((values * support).sum() / support.sum()) if defined and support.sum() > 0 else None,
        "undefined_classes": [c for c in range(s.shape[1]) if per_class[c] is None],
    }


# ---------------------------------------------------------------------------------------------- multi-label


def multilabel_scores(y_true: Any, y_pred: Any) -> dict[str, Any]:
    """Per-label P/R/F1/support, macro/micro/weighted/samples averages, subset accuracy, hamming loss and the
    per-label confusion matrices [C, 2, 2] laid out [[tn, fp], [fn, tp]] (sklearn's multilabel_confusion_matrix)."""
    t, p = _numpy(y_true).astype(bool), _numpy(y_pred).astype(bool)
    if t.ndim != 2 or t.shape != p.shape:
        raise ValueError(f"multi-label y_true and y_pred must both be [N, C]; got {t.shape} and {p.shape}")
    tp, fp, fn = (t & p).sum(0), (~t & p).sum(0), (t & ~p).sum(0)
    tn = (~t & ~p).sum(0)
    scores = _scores_from_counts(tp, fp, fn)
    row_tp, row_pred, row_true = (t & p).sum(1), p.sum(1), t.sum(1)
    scores["samples_avg"] = {
        "precision": float(_safe_divide(row_tp, row_pred).mean()),
        "recall": float(_safe_divide(row_tp, row_true).mean()),
        "f1": float(_safe_divide(2 * row_tp, row_true + row_pred).mean()),
        "support": int(t.sum()),
    }
    scores["subset_accuracy"] = accuracy(t, p)
    scores["hamming_loss"] = float((t != p).mean())
    scores["confusion_matrices"] = np.stack([np.stack([tn, fp], -1), np.stack([fn, tp], -1)], 1)
    return scores


# ---------------------------------------------------------------------------------------------- reports


def _check_inputs(y_true: Any, probs: Any, task: str) -> tuple[np.ndarray, np.ndarray]:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    t, p = _numpy(y_true), _numpy(probs, np.float64)
    if task == "binary":
        p = np.stack([1.0 - p, p], axis=1) if p.ndim == 1 else p
        t = np.rint(t.reshape(-1)).astype(np.int64)
    elif task == "multiclass":
        t = t.reshape(-1).astype(np.int64)
    if p.ndim != 2 or p.shape[0] != t.shape[0]:
        raise ValueError(f"probs must be [N, C] with N = len(y_true) = {t.shape[0]}; got {p.shape}")
    if p.shape[0] == 0:
        raise ValueError("cannot build a classification report from zero samples")
    if np.isnan(p).any():
        raise ValueError("probs contain NaN")
    if task == "multilabel" and t.shape != p.shape:
        raise ValueError(f"multi-label y_true must be [N, C] like probs {p.shape}; got {t.shape}")
    if task != "multilabel" and (t.min() < 0 or t.max() >= p.shape[1]):
        raise ValueError(f"y_true holds class {int(t.max())} but probs has only {p.shape[1]} columns")
    return t, p


def _per_class_rows(names: list[str], per_class: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    return {
        name: {
            "precision": float(per_class["precision"][i]),
            "recall": float(per_class["recall"][i]),
            "f1": float(per_class["f1"][i]),
            "support": int(per_class["support"][i]),
        }
        for i, name in enumerate(names)
    }


def classification_report(
    y_true: Any, y_prob: Any, labels: list[str] | None = None, task: str = "multiclass", threshold: float = 0.5
) -> dict[str, Any]:
    """Every classification metric in one JSON-ready dict.

    Single-label tasks predict the argmax of ``y_prob``; multi-label predicts ``y_prob >= threshold``.
    Keys: task, num_samples, labels, accuracy, macro_f1, micro_f1, weighted_f1, roc_auc (binary AUC, ovr macro,
    or multi-label macro; None when undefined), roc_auc_detail, per_class, macro_avg / micro_avg / weighted_avg
    (+ samples_avg, subset_accuracy, hamming_loss for multi-label; + binary: positive-class P/R/F1),
    confusion_matrix ([C, C], or [C, 2, 2] per label for multi-label), no_support_classes, unused_classes,
    average_policy, and notes (present when a class has no support). Raises ValueError for malformed inputs.
    """
    t, p = _check_inputs(y_true, y_prob, task)
    names = [str(x) for x in labels] if labels else [str(i) for i in range(p.shape[1])]
    if len(names) != p.shape[1]:
        raise ValueError(f"{len(names)} labels {names} but probs has {p.shape[1]} columns")
    report: dict[str, Any] = {"task": task, "num_samples": int(p.shape[0]), "labels": names}
    if task == "multilabel":
        scores = multilabel_scores(t, p >= threshold)
        auc = roc_auc_per_column(t, p)
        auc["micro"] = roc_auc_binary(t.ravel(), p.ravel())
        report.update(accuracy=scores["subset_accuracy"], subset_accuracy=scores["subset_accuracy"])
        report.update(hamming_loss=scores["hamming_loss"], samples_avg=scores["samples_avg"], threshold=threshold)
        matrix = scores["confusion_matrices"]
    else:
        y_pred = p.argmax(axis=1)
        scores = precision_recall_f1(t, y_pred, p.shape[1])
        auc = roc_auc_per_column(np.eye(p.shape[1], dtype=bool)[t], p)
        report["accuracy"] = accuracy(t, y_pred)
        matrix = confusion_matrix(t, y_pred, p.shape[1])
        if task == "binary":
            positive = scores["per_class"]
            report["binary"] = {k: float(positive[k][1]) for k in ("precision", "recall", "f1")}
            auc = {"binary": roc_auc_binary(t, p[:, 1]), **auc}
    report.update(
        macro_f1=scores["macro_avg"]["f1"],
        micro_f1=scores["micro_avg"]["f1"],
        weighted_f1=scores["weighted_avg"]["f1"],
        roc_auc=auc["binary"] if task == "binary" else auc["macro"],
        roc_auc_detail={**auc, "per_class": dict(zip(names, auc["per_class"]))},
        per_class=_per_class_rows(names, scores["per_class"]),
        macro_avg=scores["macro_avg"],
        micro_avg=scores["micro_avg"],
        weighted_avg=scores["weighted_avg"],
        confusion_matrix=matrix.tolist(),
    )
    report["roc_auc_detail"]["undefined_classes"] = [names[c] for c in auc["undefined_classes"]]
    support = scores["per_class"]["support"]
    report["no_support_classes"] = [name for name, n in zip(names, support) if n == 0]
    report["unused_classes"] = [name for name, used in zip(names, scores["averaged"]) if not used]
    report["average_policy"] = AVERAGE_POLICY
    if report["no_support_classes"]:
        # Not a warnings.warn: an absent class is normal in small test sets; the report states it instead.
        report["notes"] = [support_note(report)]
    return report


def support_note(report: dict[str, Any]) -> str:
    """One sentence naming the classes with no support and what the macro averages did with them."""
    absent, unused = report.get("no_support_classes") or [], report.get("unused_classes") or []
    only_predicted = [name for name in absent if name not in unused]
    parts = [f"no true sample of class(es) {', '.join(absent)}"]
    if unused:
        parts.append(f"{', '.join(unused)} (never predicted either) left out of the macro averages")
    if only_predicted:
        parts.append(f"{', '.join(only_predicted)} predicted but never true: counted, with precision 0")
    return "; ".join(parts) + " (scikit-learn's default: labels present in targets or predictions)"


def format_report_table(report: dict[str, Any], digits: int = 4) -> str:
    """A text table in the layout of sklearn's classification_report, plus ROC-AUC and loss when known."""
    rows = [(name, r["precision"], r["recall"], r["f1"], r["support"]) for name, r in report["per_class"].items()]
    averages = [("micro avg", "micro_avg"), ("macro avg", "macro_avg"), ("weighted avg", "weighted_avg")]
    if report.get("task") == "multilabel":
        averages.append(("samples avg", "samples_avg"))
    else:
        averages = averages[1:]  # as sklearn: for single-label tasks the micro average equals accuracy
    width = max(len("weighted avg"), *(len(name) for name, *_ in rows), digits)
    header = f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}"
    line = lambda name, p, r, f, s: f"{name:>{width}} {p:>9.{digits}f} {r:>9.{digits}f} {f:>9.{digits}f} {s:>9}"  # noqa: E731
    lines = [header, ""] + [line(*row) for row in rows] + [""]
    total = report["macro_avg"]["support"]
    if report.get("task") != "multilabel":
        lines.append(f"{'accuracy':>{width}} {'':>9} {'':>9} {report['accuracy']:>9.{digits}f} {total:>9}")
    for title, key in averages:
        if key in report:
            avg = report[key]
            lines.append(line(title, avg["precision"], avg["recall"], avg["f1"], avg["support"]))
    extras = []
    if report.get("task") == "multilabel":
        extras += [f"subset accuracy: {report['subset_accuracy']:.{digits}f}"]
        extras += [f"hamming loss: {report['hamming_loss']:.{digits}f}"]
    auc = report.get("roc_auc")
    kind = {"binary": "ROC-AUC", "multiclass": "ROC-AUC (one-vs-rest macro)"}.get(report.get("task"), "ROC-AUC (macro)")
    extras.append(f"{kind}: {'undefined' if auc is None else f'{auc:.{digits}f}'}")
    if report.get("no_support_classes"):
        extras.append(f"note: {support_note(report)}")
    undefined = (report.get("roc_auc_detail") or {}).get("undefined_classes")
    if undefined:
        extras.append(f"ROC-AUC undefined for classes (one label kind only): {', '.join(undefined)}")
    if "loss" in report:
        extras.append(f"loss: {report['loss']:.{digits}f}")
    return "\n".join(lines + [""] + extras)


# ---------------------------------------------------------------------------------------------- models


def _model_device(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@torch.no_grad()
def _run_model(model, loader, device=None, autocast=None) -> tuple[np.ndarray, np.ndarray, list[str], float | None]:
    """(y_true, probs, ids, mean loss or None) over a loader of Batch, with the model in eval mode."""
    from ..heads.classification import classification_loss, probabilities

    device = torch.device(device) if device is not None else _model_device(model)
    task = getattr(model, "task", "multiclass")
    was_training = model.training
    model.eval()
    labels, probs, ids = [], [], []
    loss_sum, loss_count = 0.0, 0
    try:
        for batch in loader:
            batch = batch.to(device)
            with autocast() if autocast is not None else torch.autocast(device.type, enabled=False):
                output = model(batch)
            probs.append(probabilities(output.logits.float(), task).cpu())
            ids.extend(batch.ids or [str(len(ids) + i) for i in range(len(batch))])
            if batch.labels is not None:
                labels.append(batch.labels.cpu())
                # the classification objective (tasks/classification.py): models return logits, not losses
                loss = output.loss if output.loss is not None else classification_loss(
                    output.logits, batch.labels, task)
                loss_sum += float(loss) * len(batch)
                loss_count += len(batch)
    finally:
        model.train(was_training)
    if not probs:
        raise ValueError("the loader yielded no batches")
    y_true = torch.cat(labels).numpy() if labels and len(labels) == len(probs) else None
    if y_true is not None and task == "binary":
        y_true = np.rint(y_true.reshape(-1)).astype(np.int64)
    return y_true, torch.cat(probs).numpy(), ids, (loss_sum / loss_count if loss_count else None)


def predict_loader(model, loader, device=None) -> tuple[np.ndarray | None, np.ndarray, list[str]]:
    """Run ``model`` over ``loader``: y_true ([N] or [N, C]; None when unlabelled), probs [N, C], ids [N]."""
    y_true, probs, ids, _ = _run_model(model, loader, device)
    return y_true, probs, ids


def evaluate_classifier(model, loader, device=None, autocast=None) -> dict[str, float]:
    """The Trainer's default validation: accuracy, macro_f1, weighted_f1, roc_auc (when defined), loss."""
    y_true, probs, _, loss = _run_model(model, loader, device, autocast)
    if y_true is None:
        raise ValueError("the validation loader has no labels: pass an evaluate_fn to the Trainer")
    report = classification_report(y_true, probs, task=getattr(model, "task", "multiclass"))
    metrics = {k: report[k] for k in ("accuracy", "macro_f1", "weighted_f1")}
    if report["roc_auc"] is not None:
        metrics["roc_auc"] = report["roc_auc"]
    if loss is not None:
        metrics["loss"] = loss
    return metrics


__all__ = [
    "accuracy",
    "classification_report",
    "confusion_matrix",
    "evaluate_classifier",
    "format_report_table",
    "multilabel_scores",
    "precision_recall_f1",
    "predict_loader",
    "roc_auc_binary",
    "roc_auc_per_column",
    "support_note",
    "AVERAGE_POLICY",
]
