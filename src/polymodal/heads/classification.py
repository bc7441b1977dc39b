"""Classification head and its loss: multiclass (softmax CE), binary (sigmoid BCE), multi-label (sigmoid BCE)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
    if task == "multiclass":
        return F.cross_entropy(logits, labels.long())
    if task == "binary":
        return F.binary_cross_entropy_with_logits(logits.squeeze(-1), labels.float().view(-1))
    return F.binary_cross_entropy_with_logits(logits, labels.float())


def probabilities(logits: Tensor, task: str) -> Tensor:
    """Class probabilities [B, C]; binary gives two columns (negative, positive) so argmax works uniformly."""
    if task == "multiclass":
        return logits.softmax(-1)
    if task == "binary":
        positive = torch.sigmoid(logits.squeeze(-1))
        return torch.stack([1 - positive, positive], dim=-1)
    return torch.sigmoid(logits)
