"""Modality contribution for ONE sample: exact Shapley values over the modalities it has.

The players are the sample's given modalities; the value of a coalition S is the model's probability of the
target class when only the modalities in S are present (the others removed exactly as the evaluation report's
ablations remove them: ``present`` False + processor placeholders, :func:`..evaluation.robustness.remove_modalities`).
The Shapley values (Shapley 1953; the same exact formula as the report's, :func:`..evaluation.robustness.
shapley_values`) sum to p(all given) − p(none given). At most 6 modalities (64 forward passes).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from ..evaluation.robustness import remove_modalities, shapley_values
from ..heads import probabilities
from ..types import Batch
from .errors import ExplainError

MAX_PLAYERS = 6


@torch.no_grad()
def sample_modality_shapley(model: nn.Module, batch: Batch, target: int) -> dict[str, Any]:
    """Shapley values of p(target) over the modalities present in the one-sample ``batch``.

    Returns ``players``, ``value`` (what v(S) measures), ``full`` = v(all), ``empty`` = v(∅) (the model's output
    with no modality; when the model refuses an empty sample, the uniform 1 / C, with ``empty_source`` saying
    so), ``subsets`` (every coalition and its value) and ``shapley`` (player → φ; Σ φ = full − empty).
    Raises ExplainError for a batch of more than one sample or more than 6 given modalities.
    """
    if len(batch) != 1:
        raise ExplainError(f"modality Shapley values here explain one sample; the batch has {len(batch)}")
    players = [name for name in batch.inputs if bool(batch.present[name][0])]
    if len(players) > MAX_PLAYERS:
        raise ExplainError(f"{len(players)} modalities make {2 ** len(players)} coalitions; at most {MAX_PLAYERS}")
    task = str(getattr(model, "task", "multiclass"))
    values: dict[frozenset, float] = {}
    empty_source = "model"
    for size in range(len(players) + 1):
        for subset in itertools.combinations(players, size):
            removed = [name for name in players if name not in subset]
            try:
                out = model(remove_modalities(batch, removed, model))
            except (ValueError, RuntimeError):
                if size:
                    raise
                num_labels = len(getattr(model, "labels", [])) or 1
                values[frozenset()] = 1.0 / num_labels if task == "multiclass" else 0.5
                empty_source = "uniform"
                continue
            logits = out.logits if hasattr(out, "logits") else out
            values[frozenset(subset)] = float(probabilities(logits.float(), task)[0, target])
    phi = shapley_values(values, players)
    return {
        "players": players,
        "value": "probability of the target class with only the coalition's modalities present",
        "full": values[frozenset(players)],
        "empty": values[frozenset()],
        "empty_source": empty_source,
        "subsets": [
            {"modalities": sorted(s, key=players.index), "value": v}
            for s, v in sorted(values.items(), key=lambda item: (len(item[0]), sorted(item[0])))
        ],
        "shapley": phi,
    }


__all__ = ["sample_modality_shapley"]
