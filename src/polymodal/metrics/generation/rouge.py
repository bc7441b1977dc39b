"""ROUGE-L: longest-common-subsequence F-measure (Lin 2004, "ROUGE: A Package for Automatic Evaluation
of Summaries", §3.1), in the two definitions people report.

``definition="rouge-score"`` (default): Google's ``rouge-score`` package, ``RougeScorer(["rougeL"])``
without stemming. Tokens: lower-case, every run of characters outside [a-z0-9] is a separator (so accented
and non-Latin letters are separators too: "café" → "caf"; use ``tokenizer="unicode"`` for such text). With
several references, ``score_multi``: the reference with the highest F1 gives the score.
P = LCS / |hyp|, R = LCS / |ref|, F1 = 2PR / (P + R); an empty side scores 0.

``definition="coco"``: pycocoevalcap's ``Rouge`` on :func:`coco_tokenize` tokens: P and R are each the
maximum over the references, and F_β = (1 + β²) P R / (R + β² P) with β = 1.2.

The corpus value is the mean of ``per_sample`` [N].
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ._inputs import MetricInputError, check_pairs
from .result import MetricResult
from .tokenizer import coco_tokenize

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_NON_WORD = re.compile(r"[\W_]+")
DEFINITIONS = ("rouge-score", "coco")
TOKENIZERS = ("rouge-score", "unicode")


def rouge_score_tokens(text: str) -> list[str]:
    """rouge-score's default tokenizer (``rouge_score.tokenize.tokenize`` without a stemmer)."""
    return [t for t in _NON_ALNUM.sub(" ", text.lower()).split() if t]


def unicode_tokens(text: str) -> list[str]:
    """Lower-case word tokens of any script (letters and digits; everything else separates)."""
    return [t for t in _NON_WORD.sub(" ", text.lower()).split() if t]


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists (O(|a|·|b|) dynamic programme)."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, start=1):
            prev_diag, row[j] = row[j], prev_diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def _f1(hyp: list[str], refs: list[list[str]]) -> float:
    best = 0.0
    for ref in refs:
        if not hyp or not ref:
            continue
        lcs = lcs_length(ref, hyp)
        p, r = lcs / len(hyp), lcs / len(ref)
        best = max(best, 2 * p * r / (p + r) if p + r > 0 else 0.0)
    return best


def _coco(hyp: list[str], refs: list[list[str]], beta: float = 1.2) -> float:
    # Tokens come from str.split(" ") as in pycocoevalcap: an empty caption is one empty token.
    lcs = [lcs_length(ref, hyp) for ref in refs]
    p = max(n / len(hyp) for n in lcs)
    r = max(n / len(ref) for n, ref in zip(lcs, refs))
    return (1 + beta**2) * p * r / (r + beta**2 * p) if p != 0 and r != 0 else 0.0


def rouge_l(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    *,
    definition: str = "rouge-score",
    tokenizer: str = "rouge-score",
) -> MetricResult:
    """ROUGE-L → MetricResult("rouge_l" or "rouge_l_coco"), scores in [0, 1]. ``tokenizer`` applies to the
    rouge-score definition only ("unicode" keeps letters of every script). Raises MetricInputError for an
    unknown definition / tokenizer or mismatched inputs."""
    if definition not in DEFINITIONS:
        raise MetricInputError(f"ROUGE-L: unknown definition {definition!r}; choose one of {DEFINITIONS}")
    if tokenizer not in TOKENIZERS:
        raise MetricInputError(f"ROUGE-L: unknown tokenizer {tokenizer!r}; choose one of {TOKENIZERS}")
    predictions, refs = check_pairs(predictions, references, "ROUGE-L")
    if definition == "coco":
        scores = [
            _coco(coco_tokenize(p).split(" "), [coco_tokenize(r).split(" ") for r in rs])
            for p, rs in zip(predictions, refs)
        ]
        name = "rouge_l_coco"
    else:
        tok = rouge_score_tokens if tokenizer == "rouge-score" else unicode_tokens
        scores = [_f1(tok(p), [tok(r) for r in rs]) for p, rs in zip(predictions, refs)]
        name = "rouge_l"
    per_sample = np.asarray(scores, dtype=np.float64)
    return MetricResult(name, float(per_sample.mean()), per_sample, per_sample)
