"""Losses as sums plus counts, so gradient accumulation can normalise over the whole optimizer step.

A model's ``loss`` is a mean over the items of one batch (samples for a classifier or a contrastive loss,
scored pairs for ITM, masked tokens for MLM). An optimizer step made of micro-batches of unequal size must not
average the micro-batch means (that over-weights the short last micro-batch of an epoch); it must divide the
summed per-item losses by the number of items in the whole step, as Hugging Face Transformers does with
``num_items_in_batch`` (transformers >= 4.46, "gradient accumulation fix"). So a model also returns its loss
as :class:`LossTerm` s — ``total`` (Σ of per-item losses) and ``count`` (items) — and can count a batch's items
before running it (``loss_counts(batch)``); the Trainer sums the counts of a step's micro-batches first and
back-propagates ``combine(terms, step_counts)`` for each micro-batch.

Keys name a term ``"<group>/<member>"`` (e.g. ``"clip/image-text"``; a key without "/" is its own group).
The combined loss is ``Σ_group weight · mean over the group's members that have items of (Σ total / Σ count)``:
for one batch this is exactly the model's ``loss``, and summing ``combine(terms_i, step_counts)`` over the
micro-batches i of a step gives the same function of the step's samples as one batch holding them all
whenever per-item losses do not interact across items (classification heads, MLM tokens). Contrastive and ITM
losses do interact (in-batch negatives): there the step loss is each micro-batch's per-item mean weighted by its
items over the step's items, Σ_i (n_i / N) · mean_i, which is what accumulation can mean for them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class LossTerm:
    """One loss of one batch: ``total`` scalar Σ of per-item losses, ``count`` items, ``weight`` of its group."""

    total: Tensor
    count: float
    weight: float = 1.0

    @property
    def mean(self) -> Tensor:
        return self.total / self.count if self.count > 0 else self.total


def term_from_mean(mean: Tensor, count: float, weight: float = 1.0) -> LossTerm:
    """A term from a loss averaged over ``count`` items (count 0 keeps the graph with a zero total)."""
    return LossTerm(total=mean * float(count), count=float(count), weight=weight)


def group_of(key: str) -> str:
    return key.split("/", 1)[0]


def add_counts(total: dict[str, float], counts: dict[str, float]) -> dict[str, float]:
    """Σ of per-micro-batch item counts (in place on ``total``, which is returned)."""
    for key, value in counts.items():
        total[key] = total.get(key, 0.0) + float(value)
    return total


def combine(terms: dict[str, LossTerm], counts: dict[str, float] | None = None) -> Tensor:
    """Σ_group weight · mean_{members with items}(total / N_member), N from ``counts`` (the step's) or the terms.

    With ``counts=None`` this is the batch's own mean loss. With the step's counts (see module doc) it is this
    micro-batch's share of the step loss; terms whose step count is 0 add ``total`` (a zero still attached to
    the graph, so collectives inside the loss run on every rank).
    """
    if not terms:
        raise ValueError("combine: no loss terms")
    counts = counts if counts is not None else {key: term.count for key, term in terms.items()}
    members: dict[str, int] = {}
    for key, value in counts.items():
        if value > 0:
            members[group_of(key)] = members.get(group_of(key), 0) + 1
    result: Tensor | None = None
    for key, term in terms.items():
        n = counts.get(key, 0.0)
        if n > 0:
            part = term.weight * term.total / (n * members[group_of(key)])
        elif term.count > 0:
            raise ValueError(f"loss term {key!r} has {term.count} items but the step counted none")
        else:
            part = term.total
        result = part if result is None else result + part
    assert result is not None
    return result


def check_counts(terms: dict[str, LossTerm], expected: dict[str, float]) -> None:
    """The items a forward pass saw must be those ``loss_counts`` announced, or the step's weights are wrong."""
    seen = {key: term.count for key, term in terms.items() if term.count > 0}
    announced = {key: float(value) for key, value in expected.items() if value > 0}
    if seen != announced:
        raise RuntimeError(
            f"the model's loss_counts(batch) {announced} disagree with the items its forward pass used {seen}; "
            "accumulated gradients would be mis-weighted (a bug in the model's loss_counts)"
        )


__all__ = ["LossTerm", "term_from_mean", "group_of", "add_counts", "combine", "check_counts"]
