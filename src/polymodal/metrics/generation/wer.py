"""Word error rate (speech recognition / transcription) via ``jiwer``, with a documented normalisation.

WER = (S + D + I) / N over the corpus: substitutions, deletions and insertions of the word-level
Levenshtein alignment (computed by jiwer's ``process_words``) summed over all samples, divided by the total
number of reference words (the corpus definition of jiwer, sclite and the speech literature; not a mean of
sentence WERs). Morris, Maier & Green 2004, "From WER and RIL to MER and WIL".

:func:`normalize_transcript` (``normalize=True``), applied to both sides before alignment:
Unicode NFKC; lower-case; every punctuation or symbol character (Unicode categories P* and S*) becomes a
space, except an apostrophe between two letters ("don't" stays one word); whitespace runs collapse. So
"Seven." and "seven" match, "seven" and "7" do not (no number normalisation). Pass ``normalize=False`` to
score the texts split on whitespace as given.

Edge cases: an empty reference contributes 0 reference words and every hypothesis word as an insertion
(its sentence WER is NaN: undefined); an empty prediction is all deletions (sentence WER 1).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np

from ..bootstrap import vectorized
from ._inputs import MetricInputError, check_pairs
from .result import MetricResult

_INNER_APOSTROPHE = re.compile(r"(?<=[^\W\d_])['’](?=[^\W\d_])")
_APOSTROPHE_MARK = "\uf8ff"  # a private-use character no transcript contains, to protect inner apostrophes


def normalize_transcript(text: str) -> str:
    """WER normalisation of one transcript: "Don't STOP—now!" → "don't stop now"."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _INNER_APOSTROPHE.sub(_APOSTROPHE_MARK, text)
    text = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    return " ".join(text.replace(_APOSTROPHE_MARK, "'").split())


def _jiwer():
    try:
        import jiwer
    except ImportError as err:  # an optional dependency: the generation extra
        raise MetricInputError(
            "word error rate needs the jiwer package: pip install 'polymodal[generation]' (or pip install jiwer)"
        ) from err
    return jiwer


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(S + D + I, number of reference words) for one already-normalised pair."""
    ref_words, hyp_words = reference.split(), hypothesis.split()
    if not ref_words or not hyp_words:  # jiwer < 4 refuses empty strings; the alignment is trivial here
        return max(len(ref_words), len(hyp_words)), len(ref_words)
    out = _jiwer().process_words(" ".join(ref_words), " ".join(hyp_words))
    return out.substitutions + out.deletions + out.insertions, len(ref_words)


@vectorized
def wer_from_stats(stats: np.ndarray) -> np.ndarray:
    """Corpus WER from stats [N, 2] = (errors, reference words), or resamples [R, N, 2] → scalar / [R]."""
    total = np.asarray(stats, dtype=np.float64).sum(axis=-2)
    words = total[..., 1]
    return np.divide(total[..., 0], words, out=np.full_like(words, np.nan), where=words > 0)


def word_error_rate(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]], *, normalize: bool = True
) -> MetricResult:
    """Corpus WER → MetricResult("wer"), ≥ 0 (can exceed 1 with many insertions; lower is better).

    predictions [N] transcripts; references [N] one transcript each (a one-element list is accepted; WER
    has no multi-reference form, so several references raise :class:`MetricInputError`, as does a corpus
    whose references hold no word). ``stats`` [N, 2] = (errors, reference words) for the bootstrap.
    """
    predictions, refs = check_pairs(predictions, references, "WER")
    for i, rs in enumerate(refs):
        if len(rs) != 1:
            raise MetricInputError(
                f"WER: sample {i} has {len(rs)} references; WER takes exactly one per sample"
            )
    prep = normalize_transcript if normalize else (lambda s: s)
    stats = np.array(
        [word_errors(prep(rs[0]), prep(p)) for p, rs in zip(predictions, refs)], dtype=np.float64
    )
    if stats[:, 1].sum() == 0:
        raise MetricInputError("WER: every reference is empty, so WER is undefined (no reference words)")
    per_sample = wer_from_stats(stats[:, None, :])
    return MetricResult("wer", float(wer_from_stats(stats)), per_sample, stats, wer_from_stats)
