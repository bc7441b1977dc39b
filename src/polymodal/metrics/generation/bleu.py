"""BLEU-1…4 as the COCO caption evaluation computes it (pycocoevalcap ``Bleu``, ``option="closest"``).

Papineni, Roukos, Ward & Zhu 2002, "BLEU: a Method for Automatic Evaluation of Machine Translation":
BLEU-n = BP · (∏_{k ≤ n} p_k)^{1/n}, with p_k the clipped k-gram precision (a candidate k-gram counts at most
as often as it appears in the reference where it appears most) and BP = exp(1 − r/c) when the candidate
length c is below the effective reference length r (else 1). COCO's choices, copied exactly:

- corpus BLEU sums clipped matches, candidate k-gram counts, c and r over the corpus first (not a mean of
  sentence scores); r per sample is the reference length closest to c (ties → the shorter);
- every precision is (matches + 1e-15) / (total + 1e-9) and the length ratio (c + 1e-15) / (r + 1e-9), so
  a zero count gives ≈ 0 instead of a log(0) error (no other smoothing);
- sentence BLEU (``per_sample``) applies the same formula to one sample's counts.

Inputs are tokenised with :func:`coco_tokenize` unless ``tokenize=False`` (then split on whitespace).
sacrebleu gives the same numbers on the same tokens with ``tokenize="none", smooth_method="none"`` where no
count is zero (tests pin both).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from ..bootstrap import vectorized
from ._inputs import check_pairs
from .result import MetricResult
from .tokenizer import coco_tokenize

_TINY, _SMALL = 1e-15, 1e-9  # pycocoevalcap's constants (bleu_scorer.compute_score)


def ngram_counts(words: list[str], max_order: int) -> Counter:
    """Counts of every 1…max_order-gram (tuples) of ``words``."""
    return Counter(
        tuple(words[i : i + k]) for k in range(1, max_order + 1) for i in range(len(words) - k + 1)
    )


def bleu_stats(hypothesis: list[str], references: list[list[str]], max_order: int = 4) -> np.ndarray:
    """Sufficient statistics of one sample → [2 + 2·max_order]: c, r (closest), totals_1..n, matches_1..n."""
    counts = ngram_counts(hypothesis, max_order)
    max_ref: dict[tuple[str, ...], int] = {}
    for ref in references:
        for gram, n in ngram_counts(ref, max_order).items():
            max_ref[gram] = max(max_ref.get(gram, 0), n)
    c = len(hypothesis)
    r = min((abs(len(ref) - c), len(ref)) for ref in references)[1]
    totals = [max(0, c - k + 1) for k in range(1, max_order + 1)]
    matches = [0] * max_order
    for gram, n in counts.items():
        matches[len(gram) - 1] += min(max_ref.get(gram, 0), n)
    return np.array([c, r, *totals, *matches], dtype=np.float64)


def bleu_from_stats(stats: np.ndarray, order: int) -> np.ndarray:
    """Corpus BLEU-``order`` from stats [N, 2 + 2·n] (or resamples [R, N, 2 + 2·n]) → scalar (or [R])."""
    stats = np.asarray(stats, dtype=np.float64)
    n = (stats.shape[-1] - 2) // 2
    if not 1 <= order <= n:
        raise ValueError(f"order must be in 1..{n}, got {order}")
    total = stats.sum(axis=-2)  # [..., K]
    c, r = total[..., 0], total[..., 1]
    precisions = (total[..., 2 + n : 2 + n + order] + _TINY) / (total[..., 2 : 2 + order] + _SMALL)
    score = np.prod(precisions, axis=-1) ** (1.0 / order)
    ratio = (c + _TINY) / (r + _SMALL)
    return np.where(ratio < 1, score * np.exp(1 - 1 / np.minimum(ratio, 1)), score)


def bleu_aggregate(order: int):
    """The vectorised corpus BLEU-``order`` of stats rows (for :class:`MetricResult` / bootstrap)."""

    @vectorized
    def aggregate(stats: np.ndarray) -> np.ndarray:
        return bleu_from_stats(stats, order)

    aggregate.__name__ = f"bleu_{order}"
    return aggregate


def bleu(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    *,
    max_order: int = 4,
    tokenize: bool = True,
) -> dict[str, MetricResult]:
    """COCO BLEU-1…``max_order`` → {"bleu_1": MetricResult, …}. Scores in [0, 1].

    predictions [N] strings; references [N] of one string or a list of strings (several references).
    ``per_sample`` [N] is the sentence BLEU; ``stats`` [N, 2 + 2·max_order] feeds the exact corpus bootstrap.
    An empty prediction scores 0. Raises :class:`~._inputs.MetricInputError` for mismatched or missing inputs.
    """
    predictions, refs = check_pairs(predictions, references, "BLEU")
    prep = coco_tokenize if tokenize else (lambda s: s)
    stats = np.stack(
        [
            bleu_stats(prep(p).split(), [prep(r).split() for r in rs], max_order)
            for p, rs in zip(predictions, refs)
        ]
    )
    out = {}
    for order in range(1, max_order + 1):
        per_sample = bleu_from_stats(stats[:, None, :], order)  # each sample as a corpus of one
        out[f"bleu_{order}"] = MetricResult(
            f"bleu_{order}", float(bleu_from_stats(stats, order)), per_sample, stats, bleu_aggregate(order)
        )
    return out
