"""Classification head and its loss: multiclass (softmax CE), binary (sigmoid BCE), multi-label (sigmoid BCE)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..objectives.accumulation import LossTerm
from ..registry import HEADS


@HEADS.register("classification")
class ClassificationHead(nn.Module):
    """pooled [B, D] → logits [B, C]. Binary tasks use one logit (C = 1)."""

    def __init__(self, in_dim: int, num_labels: int, task: str = "multiclass", hidden: int = 0, dropout: float = 0.1):
        super().__init__()
        if task not in ("multiclass", "binary", "multilabel"):
            raise ValueError(f"unknown task {task!r}; expected multiclass, binary or multilabel")
        if task == "binary" and num_labels not in (1, 2):
            raise ValueError(f"a binary task has 2 labels, got {num_labels}")
        self.task = task
        out_dim = 1 if task == "binary" else num_labels
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden:
            layers += [nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout)]
            in_dim = hidden
        layers.append(nn.Linear(in_dim, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.net(pooled)


def classification_loss(logits: Tensor, labels: Tensor, task: str) -> Tensor:
    """Mean loss over the batch (scalar): see :func:`classification_loss_sum` for the per-task definition."""
    total, count = classification_loss_sum(logits, labels, task)
    return total / max(count, 1)


def classification_loss_sum(logits: Tensor, labels: Tensor, task: str) -> tuple[Tensor, int]:
    """(Σ of per-sample losses, number of samples) — what gradient accumulation normalises over the step.

    logits [B, C] (binary: [B, 1]); labels [B] long (multiclass) or [B, C] / [B] float (binary, multilabel).
    multiclass: softmax cross-entropy; binary: sigmoid BCE on the single logit; multilabel: sigmoid BCE averaged
    over the C labels of a sample (so the mean over samples equals torch's element-wise mean over [B, C]).
    """
    count = int(logits.shape[0])
    if task == "multiclass":
        return F.cross_entropy(logits, labels.long(), reduction="sum"), count
    # Targets at least float32, and float64 with a float64 model (not silently rounded to float32).
    targets = labels.to(torch.promote_types(logits.dtype, torch.float32))
    if task == "binary":
        total = F.binary_cross_entropy_with_logits(logits.squeeze(-1), targets.view(-1), reduction="sum")
        return total, count
    per_label = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return per_label.mean(dim=-1).sum(), count


CLASSIFICATION_TERM = "classification"  # the loss_terms / loss_counts key of the one classification loss


def classification_objective(logits: Tensor, labels: Tensor, task: str) -> tuple[Tensor, dict[str, LossTerm]]:
    """The classification task's objective: (mean loss, {"classification": LossTerm(Σ loss, samples)}). The one
    definition both the classifier's forward (when the batch has labels) and ``tasks.classification`` use."""
    total, count = classification_loss_sum(logits, labels, task)
    return total / max(count, 1), {CLASSIFICATION_TERM: LossTerm(total, float(count))}


def probabilities(logits: Tensor, task: str) -> Tensor:
    """Class probabilities [B, C]; binary gives two columns (negative, positive) so argmax works uniformly."""
    if task == "multiclass":
        return logits.softmax(-1)
    if task == "binary":
        positive = torch.sigmoid(logits.squeeze(-1))
        return torch.stack([1 - positive, positive], dim=-1)
    return torch.sigmoid(logits)
