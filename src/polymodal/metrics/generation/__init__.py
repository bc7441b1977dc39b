"""Metrics for generated text (moved here from ``polymodal.evaluation.generation``, which stays an alias): captions (BLEU, CIDEr-D, ROUGE-L, METEOR), VQA answers, transcripts (WER).

Every metric takes ``predictions`` [N] (strings) and ``references`` [N] (one string or a list of strings
per sample) and returns a :class:`MetricResult`: the corpus ``value`` as the reference implementation
defines it, ``per_sample`` [N] scores, and the per-sample statistics a bootstrap resamples
(``result.bootstrap_ci()``). Definitions and the references they are pinned to are in each module.

| metric | function | reference implementation pinned in tests |
|---|---|---|
| BLEU-1…4 (COCO) | :func:`bleu` | pycocoevalcap ``Bleu``; sacrebleu (no smoothing, no tokenisation) |
| CIDEr-D (COCO) | :func:`cider_d` | pycocoevalcap ``Cider`` |
| ROUGE-L | :func:`rouge_l` | rouge-score ``rougeL``; pycocoevalcap ``Rouge`` (``definition="coco"``) |
| METEOR 1.5 | :func:`meteor` | pycocoevalcap's jar itself (needs Java) |
| VQA accuracy, exact match | :func:`vqa_accuracy`, :func:`exact_match` | the official VQA script (hand values) |
| WER | :func:`word_error_rate` | jiwer |
"""

from __future__ import annotations

from collections.abc import Sequence

from ._inputs import MetricInputError
from .bleu import bleu, bleu_from_stats
from .cider import cider_d
from .meteor import meteor, meteor_available
from .result import MetricResult
from .rouge import rouge_l
from .tokenizer import coco_tokenize
from .vqa import exact_match, normalize_answer, vqa_accuracy
from .wer import normalize_transcript, word_error_rate


def caption_metrics(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]], *, with_meteor: bool = False
) -> dict[str, MetricResult]:
    """The COCO caption suite on one tokenisation: bleu_1…4, cider_d, rouge_l_coco (+ meteor if asked and
    available) → {name: MetricResult}."""
    out = dict(bleu(predictions, references))
    out["cider_d"] = cider_d(predictions, references)
    out["rouge_l_coco"] = rouge_l(predictions, references, definition="coco")
    if with_meteor and meteor_available():
        out["meteor"] = meteor(predictions, references)
    return out


def vqa_metrics(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]]
) -> dict[str, MetricResult]:
    """vqa_accuracy and exact_match (normalised) → {name: MetricResult}."""
    return {
        "vqa_accuracy": vqa_accuracy(predictions, references),
        "exact_match": exact_match(predictions, references),
    }


__all__ = [
    "MetricInputError",
    "MetricResult",
    "bleu",
    "bleu_from_stats",
    "caption_metrics",
    "cider_d",
    "coco_tokenize",
    "exact_match",
    "meteor",
    "meteor_available",
    "normalize_answer",
    "normalize_transcript",
    "rouge_l",
    "vqa_accuracy",
    "vqa_metrics",
    "word_error_rate",
]
