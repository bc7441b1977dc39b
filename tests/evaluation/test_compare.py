"""`eval --compare`: the paired bootstrap finds a real difference, not a null one, and matches samples by id."""

import json

import numpy as np
import pytest

from polymodal.cli import main
from polymodal.evaluation.compare import align_predictions, compare_predictions

LABELS = ["a", "b", "c"]


def _predictions(y: np.ndarray, correct: np.ndarray, rng: np.random.Generator, ids=None) -> dict:
    """One-hot-ish probabilities: the true class where ``correct``, another class elsewhere."""
    wrong = (y + rng.integers(1, len(LABELS), size=len(y))) % len(LABELS)
    pred = np.where(correct, y, wrong)
    probs = np.full((len(y), len(LABELS)), 0.1)
    probs[np.arange(len(y)), pred] = 0.8
    return {"ids": ids or [f"s{i}" for i in range(len(y))], "y_true": y.tolist(), "probs": probs.tolist(),
            "labels": LABELS, "task": "multiclass", "source": "test"}


def test_detects_a_real_difference():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    a = _predictions(y, rng.uniform(size=400) < 0.85, rng)
    b = _predictions(y, rng.uniform(size=400) < 0.70, rng)
    result = compare_predictions(a, b, n_resamples=2000, seed=0)
    assert result["significant"] and result["p_value"] < 0.01
    assert result["difference"] == pytest.approx(result["metric_a"] - result["metric_b"])
    assert 0 < result["ci_low"] < result["difference"] < result["ci_high"]
    assert result["verdict"].startswith("A is better")
    reverse = compare_predictions(b, a, n_resamples=2000, seed=0)
    assert reverse["verdict"].startswith("B is better") and reverse["difference"] == pytest.approx(-result["difference"])


def test_null_differences_are_rarely_significant():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    significant = 0
    trials = 100
    for trial in range(trials):
        # same skill (75% correct), independent errors: any observed gap is noise
        a = _predictions(y, rng.uniform(size=200) < 0.75, rng)
        b = _predictions(y, rng.uniform(size=200) < 0.75, rng)
        significant += compare_predictions(a, b, n_resamples=500, seed=trial)["significant"]
    assert significant / trials <= 0.12  # nominal 5%; the paired percentile test is close to it
    same = _predictions(y, rng.uniform(size=200) < 0.75, rng)
    identical = compare_predictions(same, same, n_resamples=200)
    assert identical["difference"] == 0 and identical["p_value"] == 1.0 and not identical["significant"]


def test_samples_are_matched_by_id_whatever_the_order():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 120)
    a = _predictions(y, rng.uniform(size=120) < 0.8, rng)
    b = _predictions(y, rng.uniform(size=120) < 0.6, rng)
    order = rng.permutation(120)
    shuffled = {**b, "ids": [b["ids"][i] for i in order], "y_true": [b["y_true"][i] for i in order],
                "probs": [b["probs"][i] for i in order]}
    extra = {**shuffled, "ids": shuffled["ids"] + ["only-b"], "y_true": shuffled["y_true"] + [0],
             "probs": shuffled["probs"] + [[1.0, 0.0, 0.0]]}
    base = compare_predictions(a, b, n_resamples=300, seed=3)
    moved = compare_predictions(a, extra, n_resamples=300, seed=3)
    assert moved["metric_b"] == pytest.approx(base["metric_b"]) and moved["p_value"] == pytest.approx(base["p_value"])
    assert moved["samples"] == {"shared": 120, "only_a": 0, "only_b": 1}


def test_mismatches_are_explained():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 20)
    a = _predictions(y, np.ones(20, bool), rng)
    with pytest.raises(ValueError, match="share no sample ids"):
        align_predictions(a, {**a, "ids": [f"x{i}" for i in range(20)]})
    with pytest.raises(ValueError, match="different label sets"):
        align_predictions(a, {**a, "labels": ["a", "b", "z"]})
    flipped = {**a, "y_true": [(v + 1) % 3 if i == 4 else v for i, v in enumerate(a["y_true"])]}
    with pytest.raises(ValueError, match="sample 's4' has label"):
        align_predictions(a, flipped)
    with pytest.raises(ValueError, match="occurs more than once"):
        align_predictions(a, {**a, "ids": ["s0"] * 20})


def test_cli_compare_reads_predictions_files(tmp_path, capsys):
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 300)
    for name, rate in (("runA", 0.9), ("runB", 0.6)):
        (tmp_path / name / "eval_test").mkdir(parents=True)
        payload = _predictions(y, rng.uniform(size=300) < rate, rng)
        (tmp_path / name / "eval_test" / "predictions.json").write_text(json.dumps(payload))
    code = main(["eval", "--compare", str(tmp_path / "runA"), str(tmp_path / "runB"), "--bootstrap", "500",
                 "--out", str(tmp_path / "cmp")])
    assert code == 0
    out = capsys.readouterr().out
    assert "A is better" in out and "300 shared samples" in out
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert saved["significant"] and saved["n_resamples"] == 500
    assert main(["eval", "--compare", str(tmp_path / "runA"), str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
