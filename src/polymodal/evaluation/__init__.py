"""Evaluation: classification metrics (scikit-learn definitions, numpy only), calibration, reports."""

from ..metrics.classification import (
    accuracy,
    classification_report,
    confusion_matrix,
    evaluate_classifier,
    format_report_table,
    multilabel_scores,
    precision_recall_f1,
    predict_loader,
    roc_auc_binary,
    roc_auc_per_column,
)

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
]
