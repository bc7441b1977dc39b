"""The classification kind: quality (classification report, curves, calibration, CIs), per-sample
predictions, robustness by accuracy, and their Markdown / HTML tables."""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from ..kinds import REPORT_KINDS, ReportKind, SectionInput, degenerate_notes
from ..markdown import fmt
from ..options import ReportOptions
from .robustness import classification_robustness


def _bootstrap_intervals(y_true: np.ndarray, probs: np.ndarray, task: str, options: ReportOptions) -> dict[str, Any]:
    """CIs of the headline metrics. Accuracy (a proportion): the exact Clopper–Pearson interval, for every n
    (3/3 correct → [0.29, 1.0], not a zero-width bootstrap [1, 1]). Macro-F1, ROC-AUC, ECE: percentile bootstrap,
    all on the SAME resample indices (one seed), so they are mutually consistent; a degenerate bootstrap is
    flagged (``degenerate``, ``note``)."""
    from ....metrics.bootstrap import macro_f1_for
    from ....metrics.classification import classification_report
    from ....metrics.intervals import PROPORTION_CI, guarded_bootstrap_ci, proportion_ci
    from ...calibration import expected_calibration_error

    result: dict[str, Any] = {"n_resamples": options.bootstrap, "confidence": options.confidence,
                              "seed": options.seed, "method": "percentile",
                              "proportion_method": PROPORTION_CI, "intervals": {}}
    if options.bootstrap <= 0:
        return result
    c = probs.shape[1]

    def auc(t, p):
        value = classification_report(t, p, task=task)["roc_auc"]
        if value is None:
            raise ValueError("undefined")
        return value

    if task == "multilabel":
        # Sample-level resampling keeps the label correlation.
        metrics = {"roc_auc": (auc, (y_true, probs))}
        right = int(((probs >= 0.5) == (y_true >= 0.5)).all(axis=1).sum())
    else:
        y_pred = probs.argmax(axis=1)
        right = int((y_true.reshape(-1) == y_pred).sum())
        metrics = {
            "macro_f1": (macro_f1_for(c), (y_true, y_pred)),
            "roc_auc": (auc, (y_true, probs)),
            "ece": (lambda t, p: expected_calibration_error(t, p, options.n_bins), (y_true, probs)),
        }
    result["intervals"]["accuracy"] = proportion_ci(right, probs.shape[0], options.confidence)
    for name, (fn, arrays) in metrics.items():
        result["intervals"][name] = guarded_bootstrap_ci(fn, arrays, options.bootstrap, options.confidence,
                                                         options.seed)
    return result


def classification_quality(y_true: np.ndarray, probs: np.ndarray, labels: list[str], task: str,
                           options: ReportOptions, loss: float | None = None) -> dict[str, Any]:
    """Classification report + ROC/PR curves + calibration + bootstrap CIs for one set of predictions.

    ``y_true``: [N] class indices ([N, C] 0/1 for multilabel); ``probs``: [N, C] probabilities; ``task``:
    multiclass, binary or multilabel. Metric definitions follow scikit-learn (see evaluation.classification).
    """
    from ....metrics.classification import classification_report
    from ...calibration import calibration_report
    from ...curves import one_vs_rest_curves

    report = classification_report(y_true, probs, labels, task)
    if loss is not None:
        report["loss"] = loss
    calibration = calibration_report(y_true, probs, task, options.n_bins)
    return {
        "accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "weighted_f1": report["weighted_f1"],
        "roc_auc": report["roc_auc"],
        "ece": calibration["ece"],
        "loss": loss,
        "num_samples": report["num_samples"],
        "classification_report": report,
        "per_class": report["per_class"],
        "confusion_matrix": report["confusion_matrix"] if task != "multilabel" else None,
        "curves": one_vs_rest_curves(y_true, probs, labels),
        "calibration": calibration,
        "bootstrap": _bootstrap_intervals(y_true, probs, task, options),
    }


@REPORT_KINDS.register("classification", "label prediction: accuracy, F1, ROC-AUC, calibration, CIs")
class ClassificationReport(ReportKind):
    """Models with a classification head (multiclass, binary, multilabel)."""

    name = "classification"
    section = "quality"
    headline = ("accuracy", "macro_f1", "weighted_f1", "roc_auc", "ece", "loss")


    def quality(self, data: SectionInput) -> dict[str, Any]:
        from ....metrics.classification import _run_model

        y_true, probs, ids, loss = _run_model(data.model, data.batches, data.options.device)
        if y_true is None:
            raise ValueError("the evaluation data has no labels: a report needs labelled samples")
        labels = data.labels or [str(i) for i in range(probs.shape[1])]
        task = data.model.task
        return {
            "quality": classification_quality(y_true, probs, labels, task, data.options, loss),
            "predictions": {"ids": [str(i) for i in ids], "y_true": y_true.tolist(), "probs": probs.tolist(),
                            "labels": labels, "task": task},
        }

    def robustness(self, data: SectionInput) -> dict[str, Any]:
        return classification_robustness(data.model, data.batches, data.options, data.loader)

    def interval_notes(self, report: dict[str, Any]) -> list[str]:
        quality = report.get(self.section) or {}
        conf = quality.get("bootstrap") or {}
        notes = []
        if conf.get("n_resamples"):
            notes.append(f"Accuracy CI: exact Clopper–Pearson binomial interval (any n). Other CIs: percentile "
                         f"bootstrap, {conf['n_resamples']} resamples, seed {conf['seed']}.")
        notes += degenerate_notes(quality)
        classification = quality.get("classification_report") or {}
        if classification.get("no_support_classes"):
            from ....metrics.classification import support_note

            notes.append(f"Classes: {support_note(classification)}.")
        return notes

    def markdown(self, report: dict[str, Any]) -> list[str]:
        from ....metrics.classification import format_report_table

        quality = report.get(self.section)
        if not quality:
            return []
        cal = quality["calibration"]
        return ["```", format_report_table(quality["classification_report"]), "```", "",
                f"Calibration ({cal['n_bins']} bins): ECE {fmt(cal['ece'])}, MCE {fmt(cal['mce'])}, "
                f"classwise ECE {fmt(cal['classwise_ece'])}, Brier {fmt(cal['brier'])}, NLL {fmt(cal['nll'])}.", ""]

    def html(self, report: dict[str, Any]) -> list[str]:
        from ....metrics.classification import format_report_table

        quality = report.get(self.section)
        if not quality:
            return []
        return [f"<pre>{html.escape(format_report_table(quality['classification_report']))}</pre>"]

    def metrics(self, report: dict[str, Any]) -> dict[str, Any] | None:
        quality = report.get(self.section)
        return None if quality is None else quality["classification_report"]


__all__ = ["ClassificationReport", "classification_quality"]
