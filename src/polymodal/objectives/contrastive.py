"""Contrastive objectives over a batch of paired embeddings: CLIP (symmetric InfoNCE) and SigLIP (sigmoid).

Both take L2-normalised embeddings emb_a [n, E], emb_b [n, E] where row i of a and row i of b are a pair, and
an already-exponentiated ``logit_scale``. Under torch.distributed they gather the other ranks' embeddings with
gradients (see ``distributed.py``); ``local_loss=True`` computes only this rank's rows against all columns
(O(n·N) instead of O(N²) memory) and scales the loss so that the average over ranks is the global loss.

``group_ids`` [n]: samples sharing a group id are treated as positives of each other (e.g. several images of
the class "seven" captioned "a handwritten seven"); without it only the diagonal is positive.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..registry import OBJECTIVES
from .base import Objective, ObjectiveSetup, PairInputs, same_group, zero_loss
from .distributed import all_gather_rows, gather_sizes, world_info


def _gather_pair(emb_a: Tensor, emb_b: Tensor, group_ids: Tensor | None):
    """→ all_a [N, E], all_b [N, E], all_groups [N] | None, offset of local rows, total N."""
    _, world = world_info()
    if world == 1:
        return emb_a, emb_b, group_ids, 0, int(emb_a.shape[0])
    sizes = gather_sizes(int(emb_a.shape[0]), emb_a.device)
    all_a, offset = all_gather_rows(emb_a, sizes=sizes)
    all_b, _ = all_gather_rows(emb_b, sizes=sizes)
    all_groups = None if group_ids is None else all_gather_rows(group_ids, with_grad=False, sizes=sizes)[0]
    return all_a, all_b, all_groups, offset, sum(sizes)


def _soft_targets(positive: Tensor) -> Tensor:
    """Positive mask [n, N] → row-stochastic targets (uniform over each row's positives)."""
    positive = positive.float()
    return positive / positive.sum(dim=1, keepdim=True).clamp_min(1.0)


def clip_loss(
    emb_a: Tensor,
    emb_b: Tensor,
    logit_scale: Tensor | float,
    *,
    label_smoothing: float = 0.0,
    group_ids: Tensor | None = None,
    local_loss: bool = False,
) -> Tensor:
    """Symmetric InfoNCE: mean of CE(a→b) and CE(b→a) over the logit-scaled cosine matrix.

    emb_a, emb_b [n, E] normalised → scalar. With one process and no groups this is exactly
    ``(CE(s·A·Bᵀ, arange) + CE(s·B·Aᵀ, arange)) / 2`` as in CLIP / open_clip.
    """
    all_a, all_b, all_groups, offset, total = _gather_pair(emb_a, emb_b, group_ids)
    if total == 0:
        return zero_loss(emb_a, emb_b, logit_scale if isinstance(logit_scale, Tensor) else None)
    if local_loss:
        n = int(emb_a.shape[0])
        logits_ab = logit_scale * emb_a @ all_b.T  # [n, N]: this rank's rows against every column
        logits_ba = logit_scale * emb_b @ all_a.T
        local_groups = group_ids
        positive = same_group(local_groups, all_groups, n, total, offset, emb_a.device)
    else:
        n = total
        logits_ab = logit_scale * all_a @ all_b.T  # [N, N]
        logits_ba = logits_ab.T
        positive = same_group(all_groups, all_groups, total, total, 0, emb_a.device)
    if group_ids is None:
        targets = positive.float().argmax(dim=1)  # the (shifted) diagonal as class indices
    else:
        targets = _soft_targets(positive)
    loss_ab = F.cross_entropy(logits_ab, targets, label_smoothing=label_smoothing, reduction="sum")
    loss_ba = F.cross_entropy(logits_ba, targets, label_smoothing=label_smoothing, reduction="sum")
    loss = (loss_ab + loss_ba) / 2
    if local_loss:
        # Sum over local rows / N, times world size: the rank *average* (what DDP's gradient averaging sees)
        # is then the global mean, even when ranks hold different numbers of rows.
        return loss * world_info()[1] / total
    return loss / n


def siglip_loss(
    emb_a: Tensor,
    emb_b: Tensor,
    logit_scale: Tensor | float,
    logit_bias: Tensor | float | None = None,
    *,
    group_ids: Tensor | None = None,
    local_loss: bool = False,
) -> Tensor:
    """Sigmoid loss (Zhai et al. 2023): -Σ_ij log σ(z_ij · (s·a_i·b_j + t)) / n, z = +1 positive, -1 negative.

    Normalised as in big_vision: summed over columns, averaged over rows (the batch size).
    """
    all_a, all_b, all_groups, offset, total = _gather_pair(emb_a, emb_b, group_ids)
    bias = 0.0 if logit_bias is None else logit_bias
    if total == 0:
        return zero_loss(emb_a, emb_b, logit_scale if isinstance(logit_scale, Tensor) else None)
    if local_loss:
        n = int(emb_a.shape[0])
        logits = logit_scale * emb_a @ all_b.T + bias  # [n, N]
        positive = same_group(group_ids, all_groups, n, total, offset, emb_a.device)
    else:
        logits = logit_scale * all_a @ all_b.T + bias  # [N, N]
        positive = same_group(all_groups, all_groups, total, total, 0, emb_a.device)
    signs = positive.to(logits.dtype) * 2 - 1
    loss = -F.logsigmoid(signs * logits).sum()
    if local_loss:
        return loss * world_info()[1] / total
    return loss / total


# ---------------------------------------------------------------------------------------------- registry


class _ContrastiveObjective(Objective):
    reads_tokens = False  # pooled embeddings only: a feature cache may keep pooled vectors alone

    def __init__(self, setup: ObjectiveSetup, labels_as_positives: bool = False, local_loss: bool = False):
        super().__init__(setup)
        self.labels_as_positives = labels_as_positives
        self.local_loss = local_loss

    def _groups(self, pair: PairInputs) -> Tensor | None:
        return pair.group_ids if self.labels_as_positives else None


@OBJECTIVES.register("clip")
class ClipObjective(_ContrastiveObjective):
    """Symmetric InfoNCE over the logit-scaled cosine matrix (CLIP)."""

    def __init__(self, setup: ObjectiveSetup, label_smoothing: float = 0.0, labels_as_positives: bool = False,
                 local_loss: bool = False):
        super().__init__(setup, labels_as_positives, local_loss)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"clip: label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, pair: PairInputs) -> Tensor:
        return clip_loss(pair.emb_a, pair.emb_b, pair.logit_scale, label_smoothing=self.label_smoothing,
                         group_ids=self._groups(pair), local_loss=self.local_loss)


@OBJECTIVES.register("siglip")
class SigLipObjective(_ContrastiveObjective):
    """Pairwise sigmoid loss with a learnable logit bias (SigLIP)."""

    def forward(self, pair: PairInputs) -> Tensor:
        return siglip_loss(pair.emb_a, pair.emb_b, pair.logit_scale, pair.logit_bias,
                           group_ids=self._groups(pair), local_loss=self.local_loss)


__all__ = ["clip_loss", "siglip_loss", "ClipObjective", "SigLipObjective"]
