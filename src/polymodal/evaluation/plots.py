"""Report plots as PNG bytes (matplotlib's Agg canvas; pyplot and the global backend are never touched).

Every ``plot_*`` function takes a section of a built report and returns PNG bytes; :func:`render_plots`
draws every plot the report has data for. Without matplotlib, :func:`matplotlib_available` is False and
:func:`render_plots` returns {}.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

MAX_CURVES = 10  # ROC / PR legends become unreadable beyond this; the first classes are drawn


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float = 5.5, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_confusion_matrix(matrix: list[list[int]], labels: list[str]) -> bytes:
    cm = np.asarray(matrix, dtype=float)
    size = max(4.0, 0.45 * len(labels) + 2)
    fig = _figure(size, size)
    ax = fig.add_subplot()
    image = ax.imshow(cm, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xlabel="predicted", ylabel="true", title="Confusion matrix")
    ax.set_xticklabels(labels, rotation=45, ha="right")
    ax.set_yticklabels(labels)
    if len(labels) <= 20:
        for (i, j), value in np.ndenumerate(cm):
            ax.text(j, i, int(value), ha="center", va="center", fontsize=7, color="white" if value > cm.max() / 2 else "black")
    return _png(fig)


def plot_per_class(per_class: dict[str, dict[str, float]]) -> bytes:
    names = list(per_class)
    x = np.arange(len(names))
    fig = _figure(max(5.5, 0.5 * len(names) + 2), 4.0)
    ax = fig.add_subplot()
    for offset, key in zip((-0.27, 0.0, 0.27), ("precision", "recall", "f1")):
        ax.bar(x + offset, [per_class[n][key] for n in names], width=0.27, label=key)
    ax.set(xticks=x, ylim=(0, 1.05), title="Per-class precision / recall / F1")
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def plot_roc(roc: dict[str, dict[str, Any]]) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    for name, curve in list(roc.items())[:MAX_CURVES]:
        ax.plot(curve["fpr"], curve["tpr"], label=f"{name} (AUC {curve['auc']:.3f})")
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (one-vs-rest)", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def plot_pr(pr: dict[str, dict[str, Any]]) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    for name, curve in list(pr.items())[:MAX_CURVES]:
        ax.step(curve["recall"], curve["precision"], where="post", label=f"{name} (AP {curve['average_precision']:.3f})")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (one-vs-rest)", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="lower left")
    return _png(fig)


def plot_reliability(reliability: dict[str, list], ece: float | None = None) -> bytes:
    edges = np.asarray(reliability["bin_edges"])
    centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    accuracy = np.array([np.nan if a is None else a for a in reliability["accuracy"]], dtype=float)
    confidence = np.array([np.nan if c is None else c for c in reliability["confidence"]], dtype=float)
    fig = _figure(5.0, 5.0)
    ax = fig.add_subplot()
    ax.bar(centers, np.nan_to_num(accuracy), width=width, edgecolor="black", alpha=0.8, label="accuracy")
    ax.bar(centers, np.nan_to_num(confidence - accuracy), bottom=np.nan_to_num(accuracy), width=width,
           color="red", alpha=0.3, label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    title = "Reliability diagram" + ("" if ece is None else f" (ECE {ece:.3f})")
    ax.set(xlabel="confidence", ylabel="accuracy", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def plot_rank_histogram(histogram: dict[str, list]) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    ax.bar(range(len(histogram["bins"])), histogram["counts"], tick_label=histogram["bins"])
    ax.set(xlabel="rank of the correct item", ylabel="queries", title="Retrieval rank histogram")
    return _png(fig)


def plot_training(series: dict[str, dict[str, list]]) -> bytes:
    losses = {k: v for k, v in series.items() if "loss" in k}
    others = {k: v for k, v in series.items() if "loss" not in k}
    fig = _figure(9.0, 3.8)
    for position, (group, title) in enumerate(((losses, "losses"), (others, "metrics")), start=1):
        ax = fig.add_subplot(1, 2, position)
        for name, points in list(group.items())[:8]:
            ax.plot(points["step"], points["value"], marker="." if len(points["step"]) < 30 else None, label=name)
        ax.set(xlabel="step", title=f"Training {title}")
        if group:
            ax.legend(fontsize=7)
    return _png(fig)


def plot_imperfection(curves: list[dict[str, Any]]) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    for curve in curves:
        label = f"{curve['corruption']} ({'+'.join(curve['modalities'])}), rel. {curve['relative_robustness']:.2f}"
        ax.plot(curve["severities"], curve["values"], marker="o", label=label)
    ax.set(xlabel="severity", ylabel="metric", title="Imperfection curves", ylim=(0, 1.02))
    ax.legend(fontsize=7)
    return _png(fig)


def render_plots(report: dict[str, Any]) -> dict[str, bytes]:
    """Title → PNG bytes for every plot ``report`` has data for ({} without matplotlib)."""
    if not matplotlib_available():
        return {}
    plots: dict[str, bytes] = {}
    quality = report.get("quality") or {}
    labels = report.get("meta", {}).get("labels", [])
    if quality.get("confusion_matrix"):
        plots["Confusion matrix"] = plot_confusion_matrix(quality["confusion_matrix"], labels)
    if quality.get("per_class"):
        plots["Per-class precision / recall / F1"] = plot_per_class(quality["per_class"])
    curves = quality.get("curves") or {}
    if curves.get("roc"):
        plots["ROC curves"] = plot_roc(curves["roc"])
    if curves.get("pr"):
        plots["Precision-recall curves"] = plot_pr(curves["pr"])
    calibration = quality.get("calibration") or {}
    if calibration.get("reliability"):
        plots["Reliability diagram"] = plot_reliability(calibration["reliability"], calibration.get("ece"))
    if report.get("retrieval_ranks"):
        plots["Retrieval rank histogram"] = plot_rank_histogram(report["retrieval_ranks"]["histogram"])
    if (report.get("training") or {}).get("series"):
        plots["Training curves"] = plot_training(report["training"]["series"])
    corruption_curves = (report.get("robustness") or {}).get("corruptions") or []
    if corruption_curves:
        plots["Robustness imperfection curves"] = plot_imperfection(corruption_curves)
    return plots


__all__ = ["matplotlib_available", "render_plots"] + [name for name in dir() if name.startswith("plot_")]
