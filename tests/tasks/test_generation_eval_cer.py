"""Character error rate of the transcription task (tasks.generation_eval.character_error_rate), pinned to jiwer's
corpus CER on the same normalised texts, and the transcription metric set it joins."""

from __future__ import annotations

import pytest

from polymodal.metrics.generation.wer import normalize_transcript
from polymodal.tasks.generation_eval import character_error_rate, task_metrics

jiwer = pytest.importorskip("jiwer")

CORPORA = [
    (["seven", "three"], [["seven"], ["three"]]),
    (["Seven.", "thre", "nine  eight"], [["seven"], ["three"], ["nine eight"]]),
    (["a cat sat", "dogs", "don't STOP—now!"], [["the cat sat"], ["dog"], ["do not stop now"]]),
    (["xyzzy", "", "one"], [["four"], ["five"], ["one two three"]]),
]


@pytest.mark.parametrize(("predictions", "references"), CORPORA)
def test_cer_equals_jiwer_on_the_normalised_corpus(predictions, references):
    result = character_error_rate(predictions, references)
    pairs = [(normalize_transcript(r[0]), normalize_transcript(p)) for p, r in zip(predictions, references)]
    if all(hyp for _, hyp in pairs):
        expected = jiwer.cer([r for r, _ in pairs], [h for _, h in pairs])
    else:  # jiwer refuses an empty hypothesis: each of its reference characters is a deletion
        edits = sum(len(r) if not h else jiwer.cer(r, h) * len(r) for r, h in pairs)
        expected = edits / sum(len(r) for r, _ in pairs)
    assert result.value == pytest.approx(expected, abs=1e-12)
    assert result.stats[:, 1].sum() == sum(len(r) for r, _ in pairs)


def test_cer_is_zero_for_exact_transcripts_and_has_a_bootstrap_ci():
    result = character_error_rate(["seven", "Three!"], [["seven"], ["three"]])
    assert result.value == 0.0
    wrong = character_error_rate(["seven", "tree", "nine", "sicks"], [["seven"], ["three"], ["nine"], ["six"]])
    _, low, high = wrong.bootstrap_ci(n_resamples=200, seed=0)
    assert 0.0 <= low <= wrong.value <= high
    assert wrong.value == pytest.approx((1 + 3) / (5 + 5 + 4 + 3))  # tree: 1 deletion; sicks: 3 edits


def test_transcription_metrics_hold_wer_cer_and_exact_match():
    results = task_metrics("transcription", ["seven", "tree"], [["seven"], ["three"]])
    assert set(results) == {"wer", "cer", "exact_match"}
    assert results["wer"].value == pytest.approx(0.5) and results["cer"].value == pytest.approx(1 / 10)
