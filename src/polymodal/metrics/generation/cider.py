"""CIDEr-D as the COCO caption evaluation computes it (pycocoevalcap ``Cider``).

Vedantam, Zitnick & Parikh 2015, "CIDEr: Consensus-based Image Description Evaluation", §4 (the "-D"
variant used by the COCO server). For n = 1…4, each caption becomes a TF-IDF vector of its n-grams, with
IDF = log(|I|) − log(max(1, df(g))), |I| the number of samples in the evaluated corpus and df(g) the
number of samples whose references contain g. Per sample and reference:

    sim_n = Σ_g min(v_hyp[g], v_ref[g]) · v_ref[g] / (‖v_hyp‖ ‖v_ref‖) · exp(−(ℓ_hyp − ℓ_ref)² / (2σ²))

with σ = 6 (the "-D" clipping and length penalty). CIDEr-D of the sample = 10 · mean_n mean_refs sim_n;
the corpus value is the mean over samples. Copied quirks, so numbers match pycocoevalcap to 1e-6:
ℓ is the number of *bigrams* of a caption (pycocoevalcap counts ``n == 1`` of its 0-based n-gram index),
and an n-gram absent from every reference keeps df = 1.

The IDF is a property of the whole evaluated corpus: one sample alone scores 0 (log |I| = 0), and a
bootstrap over ``per_sample`` keeps the IDF of the full corpus fixed (the usual practice).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from ._inputs import check_pairs
from .bleu import ngram_counts
from .result import MetricResult
from .tokenizer import coco_tokenize


def _vector(counts: Counter, df: dict, log_n: float, n: int) -> tuple[list[dict], np.ndarray, int]:
    vec: list[dict] = [{} for _ in range(n)]
    norm = np.zeros(n)
    for gram, tf in counts.items():
        k = len(gram) - 1
        vec[k][gram] = tf * (log_n - math.log(max(1.0, df.get(gram, 0.0))))
        norm[k] += vec[k][gram] ** 2
    length = sum(tf for gram, tf in counts.items() if len(gram) == 2)
    return vec, np.sqrt(norm), length


def cider_d(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    *,
    max_order: int = 4,
    sigma: float = 6.0,
    tokenize: bool = True,
) -> MetricResult:
    """COCO CIDEr-D → MetricResult("cider_d"); value = mean of ``per_sample`` [N]; ≥ 0 (10 = a perfect
    match of consensus n-grams, values above 1 are common). Inputs as in :func:`~.bleu.bleu`."""
    predictions, refs = check_pairs(predictions, references, "CIDEr-D")
    prep = coco_tokenize if tokenize else (lambda s: s)
    hyp_counts = [ngram_counts(prep(p).split(), max_order) for p in predictions]
    ref_counts = [[ngram_counts(prep(r).split(), max_order) for r in rs] for rs in refs]
    df: dict = defaultdict(float)
    for counts in ref_counts:
        for gram in {g for c in counts for g in c}:
            df[gram] += 1
    log_n = math.log(float(len(predictions)))
    scores = np.zeros(len(predictions))
    for i, (hyp, refs_i) in enumerate(zip(hyp_counts, ref_counts)):
        vec, norm, length = _vector(hyp, df, log_n, max_order)
        total = np.zeros(max_order)
        for ref in refs_i:
            vec_r, norm_r, length_r = _vector(ref, df, log_n, max_order)
            penalty = math.exp(-((length - length_r) ** 2) / (2 * sigma**2))
            for k in range(max_order):
                val = sum(min(w, vec_r[k].get(g, 0.0)) * vec_r[k].get(g, 0.0) for g, w in vec[k].items())
                if norm[k] != 0 and norm_r[k] != 0:
                    val /= norm[k] * norm_r[k]
                total[k] += val * penalty
        scores[i] = 10.0 * total.mean() / len(refs_i)
    return MetricResult("cider_d", float(scores.mean()), scores, scores)
