"""Input checks shared by the generation metrics: one prediction and one or more references per sample."""

from __future__ import annotations

from collections.abc import Sequence

from ...errors import PolymodalError


class MetricInputError(PolymodalError, ValueError):
    """Predictions / references that a generation metric cannot score; the message names the sample."""


def check_pairs(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    metric: str,
    *,
    allow_empty: bool = False,
) -> tuple[list[str], list[list[str]]]:
    """Validate and normalise inputs → (predictions [N], references [N][K_i ≥ 1]).

    ``references[i]`` may be one string (a single reference) or a list of strings (several references).
    Raises :class:`MetricInputError` naming the sample index when the lengths differ, a sample has no
    reference, or an entry is not a string. ``allow_empty``: N = 0 is allowed (the caller returns an empty
    result) instead of raised.
    """
    if isinstance(predictions, str) or isinstance(references, str):
        raise MetricInputError(
            f"{metric}: pass a list of predictions and a list of references, not one string"
        )
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise MetricInputError(
            f"{metric}: {len(predictions)} predictions but {len(references)} reference entries; "
            "give one reference list per prediction"
        )
    if not predictions and not allow_empty:
        raise MetricInputError(f"{metric}: no samples to score (empty predictions and references)")
    refs_out: list[list[str]] = []
    for i, (pred, refs) in enumerate(zip(predictions, references)):
        if not isinstance(pred, str):
            raise MetricInputError(f"{metric}: prediction {i} is {type(pred).__name__}, expected a string")
        refs = [refs] if isinstance(refs, str) else list(refs)
        if not refs:
            raise MetricInputError(f"{metric}: sample {i} has no reference; every sample needs at least one")
        for j, ref in enumerate(refs):
            if not isinstance(ref, str):
                raise MetricInputError(
                    f"{metric}: reference {j} of sample {i} is {type(ref).__name__}, expected a string"
                )
        refs_out.append(refs)
    return predictions, refs_out
