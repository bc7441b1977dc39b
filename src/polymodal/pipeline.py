"""Old import path of the train recipe (``polymodal.recipes.train``), kept so user code keeps working; polymodal
itself never imports this module."""

from __future__ import annotations

from typing import Any

from .recipes.train import apply_finetune_section as _apply_finetune  # noqa: F401
from .recipes.train import prepare, train  # noqa: F401
from .tasks import get_task
from .tasks.classification import absolute_data_paths as _absolute_data_paths  # noqa: F401


def evaluate_model(model, loader, device: str = "cpu") -> dict[str, Any]:
    """Full classification report (accuracy, per-class P/R/F1, averages, confusion matrix, ROC-AUC)."""
    return get_task("classification").test_metrics(model, loader, None, device)
