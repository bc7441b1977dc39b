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


# ---------------------------------------------------------------------------------------------- small samples


def _fixed(y, pred, ids=None) -> dict:
    probs = np.full((len(y), len(LABELS)), 0.1)
    probs[np.arange(len(y)), pred] = 0.8
    return {"ids": ids or [f"s{i}" for i in range(len(y))], "y_true": list(map(int, y)), "probs": probs.tolist(),
            "labels": LABELS, "task": "multiclass", "source": "test"}


@pytest.mark.parametrize("n", [1, 3, 4, 5])
def test_tiny_all_right_vs_all_wrong_uses_the_exact_test(n):
    """A right on all n, B wrong on all n: McNemar exact p = 2 * 0.5**n; the bootstrap said p = 0.0000."""
    from scipy import stats

    y = np.arange(n) % 3
    result = compare_predictions(_fixed(y, y), _fixed(y, (y + 1) % 3), n_resamples=500)
    assert result["test"] == "mcnemar_exact" and result["discordant"] == {"a_right_b_wrong": n, "a_wrong_b_right": 0}
    assert result["p_value"] == pytest.approx(stats.binomtest(n, n, 0.5).pvalue)
    assert result["p_value"] >= 0.0625 and not result["significant"]  # 5 of 5 is the first p below 0.1
    assert result["ci_low"] < 0 < result["ci_high"] == pytest.approx(1.0)  # not the zero-width [+1, +1]
    assert result["bootstrap_p_value"] > 0  # (1 + k) / (R + 1), never 0
    assert any("degenerate" in w for w in result["warnings"])
    assert "is better" not in result["verdict"]


def test_six_discordant_pairs_can_be_significant_with_the_exact_test():
    y = np.zeros(10, int)
    pred_b = np.r_[np.ones(6, int), np.zeros(4, int)]  # B wrong on 6, both right on 4
    result = compare_predictions(_fixed(y, y), _fixed(y, pred_b), n_resamples=300)
    assert result["test"] == "mcnemar_exact" and result["p_value"] == pytest.approx(2 * 0.5**6)
    assert result["significant"] and result["verdict"].startswith("A is better")


def test_no_discordant_pairs_warn_about_the_zero_width_interval():
    y = np.arange(9) % 3
    pred = np.where(np.arange(9) < 6, y, (y + 1) % 3)
    result = compare_predictions(_fixed(y, pred), _fixed(y, pred), n_resamples=100)
    assert result["p_value"] == 1.0 and not result["significant"]
    assert (result["ci_low"], result["ci_high"]) == (0.0, 0.0)
    assert any("no discordant pairs" in w for w in result["warnings"])


def test_many_discordant_pairs_keep_the_bootstrap_and_report_mcnemar():
    from scipy import stats

    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 300)
    a = _predictions(y, rng.uniform(size=300) < 0.8, rng)
    b = _predictions(y, rng.uniform(size=300) < 0.7, rng)
    result = compare_predictions(a, b, n_resamples=400)
    d = result["discordant"]
    assert d["a_right_b_wrong"] + d["a_wrong_b_right"] >= 25 and result["test"] == "paired_bootstrap"
    assert result["p_value"] == result["bootstrap_p_value"]
    expected = stats.binomtest(d["a_right_b_wrong"], d["a_right_b_wrong"] + d["a_wrong_b_right"], 0.5).pvalue
    assert result["mcnemar_p_value"] == pytest.approx(expected)


def test_macro_f1_on_few_discordant_pairs_is_never_bolder_than_mcnemar():
    y = np.arange(4) % 3
    result = compare_predictions(_fixed(y, y), _fixed(y, (y + 1) % 3), metric="macro_f1", n_resamples=300)
    assert result["test"] == "paired_bootstrap+mcnemar_exact"
    assert result["p_value"] >= result["mcnemar_p_value"] == pytest.approx(0.125)
    assert not result["significant"]


def test_cli_compare_on_three_samples_claims_nothing(tmp_path, capsys):
    y = np.array([0, 1, 2])
    (tmp_path / "a.json").write_text(json.dumps(_fixed(y, y)))
    (tmp_path / "b.json").write_text(json.dumps(_fixed(y, (y + 1) % 3)))
    assert main(["eval", "--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out",
                 str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "McNemar exact p = 0.2500" in out and "is better" not in out and "warning:" in out
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert saved["p_value"] == pytest.approx(0.25) and saved["significant"] is False
