"""METEOR 1.5 through the COCO caption evaluation's own wrapper (pycocoevalcap ``Meteor``, needs Java).

Banerjee & Lavie 2005, "METEOR: An Automatic Metric for MT Evaluation with Improved Correlation with
Human Judgments"; Denkowski & Lavie 2014 (METEOR Universal, version 1.5): unigram matches by exact form,
stem, synonym and paraphrase, a fragmentation penalty, and an F-mean weighted towards recall.

Why a wrapper and not a Python version: METEOR's synonym stage needs WordNet, which NLTK downloads from the
internet at run time (not available offline), while the pycocoevalcap wheel ships the METEOR 1.5 jar with its
paraphrase table, i.e. the exact implementation the COCO server runs. It needs a ``java`` executable
(Java 8 or newer) and ``pip install pycocoevalcap``; :func:`meteor_available` says whether both are there.
The JVM start and the paraphrase table load take ~10 s.

The corpus value is METEOR's own aggregate over all samples (the jar's ``EVAL`` line), which is not the
mean of the per-sample scores, so the result has no bootstrap aggregate.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence

import numpy as np

from ._inputs import MetricInputError, check_pairs
from .result import MetricResult
from .tokenizer import coco_tokenize


def meteor_available() -> bool:
    """True when pycocoevalcap is installed and a ``java`` executable is on PATH."""
    try:
        import pycocoevalcap.meteor.meteor  # noqa: F401
    except ImportError:
        return False
    return shutil.which("java") is not None


def meteor(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> MetricResult:
    """COCO METEOR → MetricResult("meteor"), scores in [0, 1], on :func:`coco_tokenize` tokens.

    Raises :class:`MetricInputError` when Java or pycocoevalcap is missing (saying what to install)."""
    predictions, refs = check_pairs(predictions, references, "METEOR")
    if not meteor_available():
        raise MetricInputError(
            "METEOR needs pycocoevalcap (pip install pycocoevalcap) and a Java runtime on PATH "
            "(e.g. apt-get install default-jre-headless); NLTK's METEOR is not used because it downloads WordNet"
        )
    from pycocoevalcap.meteor.meteor import Meteor

    # "|||" separates fields in the jar's protocol; pycocoevalcap strips it from hypotheses only.
    res = {i: [coco_tokenize(p).replace("|||", "")] for i, p in enumerate(predictions)}
    gts = {i: [coco_tokenize(r).replace("|||", "") for r in rs] for i, rs in enumerate(refs)}
    scorer = Meteor()
    try:
        value, per_sample = scorer.compute_score(gts, res)
    finally:  # the JVM lives until the scorer is collected; end it now
        scorer.meteor_p.stdin.close()
        scorer.meteor_p.kill()
        scorer.meteor_p.wait()
    scores = np.asarray(per_sample, dtype=np.float64)
    return MetricResult("meteor", float(value), scores, scores, aggregate=None)
