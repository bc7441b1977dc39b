"""Gradient accumulation normalised over the whole optimizer step.

An optimizer step of micro-batches b_1..b_k (4 + 4 + 2 samples when an epoch's size is not a multiple of
batch_size × grad_accum) must follow the gradient of the step's mean loss, not of the mean of micro-batch means
(which gives each of the last 2 samples twice the weight of the others). The Trainer therefore reads a step's
micro-batches first, asks the model how many items each one's loss averages over (``model.loss_counts``), and
back-propagates for micro-batch i its share ``combine(terms_i, step_counts)`` (see objectives.accumulation):
Σ_i share_i is the step loss, and its gradient is exactly the one-big-batch gradient for per-sample losses.

Models without ``loss_counts`` / ``loss_terms`` (plain ``forward(batch) -> .loss`` modules) are weighted by
samples: share_i = loss_i · n_i / N.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from torch import Tensor, nn

from ..objectives.accumulation import add_counts, check_counts, combine
from ..types import Batch


@dataclass
class MicroBatch:
    """One micro-batch of an optimizer step, with what it needs to weigh its loss against the whole step."""

    batch: Batch
    counts: dict[str, float] = field(default_factory=dict)  # items of this micro-batch, per loss term
    step_counts: dict[str, float] = field(default_factory=dict)  # Σ over the step's micro-batches
    step_samples: int = 0  # samples in the whole step


def step_micro_batches(
    model: nn.Module,
    batches: Iterator[Batch],
    group_size: Callable[[], int],
    transform: Callable[[Batch], Batch] | None = None,
    counter: Callable[[Batch], dict[str, float] | None] | None = None,
    prepare: Callable[[Batch], Batch] | None = None,
) -> Iterator[MicroBatch]:
    """Yield micro-batches, each group of ``group_size()`` read (and counted) before the first is yielded.

    ``group_size`` is asked at the start of each step (the last step of an epoch may be short); ``transform``
    runs on every batch before counting (modality dropout), then the model's ``prepare_batch`` if it has one
    (it draws what the loss depends on, e.g. MLM masks, so that the counts are known before the forward pass).
    Batches stay where the loader put them (CPU): only one micro-batch at a time goes to the device.
    """
    # The task's counter / preparation (tasks.base.Task) when given, else the model's own methods.
    prepare = prepare or getattr(model, "prepare_batch", None)
    counter = counter or getattr(model, "loss_counts", None)
    while True:
        size = group_size()
        if size < 1:
            return
        group = list(islice(batches, size))
        if not group:
            return
        if transform is not None:
            group = [transform(batch) for batch in group]
        if prepare is not None:
            group = [prepare(batch) for batch in group]
        counts = [dict(counter(batch) or {}) if counter is not None else {} for batch in group]
        step_counts: dict[str, float] = {}
        for item in counts:
            add_counts(step_counts, item)
        samples = sum(len(batch) for batch in group)
        for batch, item in zip(group, counts):
            yield MicroBatch(batch, item, step_counts, samples)


def share_of_step(output: Any, micro: MicroBatch, batch_size: int) -> Tensor:
    """This micro-batch's part of the step loss (scalar, to back-propagate): Σ over the step = the step loss."""
    terms = getattr(output, "loss_terms", None)
    if terms and micro.step_counts:
        check_counts(terms, micro.counts)
        return combine(terms, micro.step_counts)
    return output.loss * (batch_size / max(micro.step_samples, 1))


__all__ = ["MicroBatch", "step_micro_batches", "share_of_step"]
