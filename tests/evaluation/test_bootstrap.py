"""Bootstrap CIs: coverage on simulated data, vectorised == loop, paired test behaviour."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from polymodal.metrics.bootstrap import (
    accuracy_metric,
    bootstrap_ci,
    macro_f1_for,
    macro_f1_metric,
    paired_bootstrap,
)


def test_percentile_ci_covers_true_accuracy_about_95_percent():
    rng = np.random.default_rng(0)
    p_true, n, covered = 0.7, 200, 0
    for trial in range(200):
        y = np.zeros(n, int)
        pred = (rng.uniform(size=n) >= p_true).astype(int)  # correct with probability p_true
        _, low, high = bootstrap_ci(accuracy_metric, y, pred, n_resamples=1000, seed=trial)
        covered += low <= p_true <= high
    assert 0.90 <= covered / 200 <= 0.99


def test_vectorised_and_loop_paths_agree():
    rng = np.random.default_rng(1)
    y, pred = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    loop = lambda a, b: float((a == b).mean())  # noqa: E731 (no `vectorized` attribute: R calls)
    vec = bootstrap_ci(accuracy_metric, y, pred, n_resamples=300, seed=7)
    ref = bootstrap_ci(loop, y, pred, n_resamples=300, seed=7)
    # same seed, same index stream → identical intervals
    assert vec == pytest.approx(ref, abs=1e-12)


def test_vectorised_macro_f1_matches_sklearn():
    rng = np.random.default_rng(2)
    y, pred = rng.integers(0, 5, (8, 60)), rng.integers(0, 5, (8, 60))
    ours = macro_f1_metric(y, pred, 5)
    ref = [f1_score(y[r], pred[r], average="macro", labels=range(5), zero_division=0) for r in range(8)]
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    point, low, high = bootstrap_ci(macro_f1_for(5), y[0], pred[0], n_resamples=200)
    assert low <= point <= high


@pytest.mark.parametrize("method", ["basic", "bca"])
def test_other_methods_give_sane_intervals(method):
    rng = np.random.default_rng(3)
    y, pred = np.zeros(150, int), (rng.uniform(size=150) > 0.8).astype(int)
    point, low, high = bootstrap_ci(accuracy_metric, y, pred, n_resamples=500, method=method)
    assert low < point < high and high - low < 0.2


def test_undefined_resamples_are_reported():
    y = pred = np.array([0, 0, 1, 2, 3])

    def needs_two_classes(a, b):
        if not {1, 2, 3} <= set(a.tolist()):  # like ROC-AUC: undefined when a class is missing
            raise ValueError("a class is missing")
        return float((a == b).mean())

    rare = np.r_[np.zeros(200, int), 1, 2, 3]  # a resample holds all three rare classes only ~25% of the time
    with pytest.raises(ValueError, match="undefined on"):
        bootstrap_ci(needs_two_classes, rare, rare, n_resamples=100)
    with pytest.warns(UserWarning, match="degenerate"):  # every resample is perfect: a zero-width interval
        assert bootstrap_ci(needs_two_classes, y.repeat(10), pred.repeat(10), n_resamples=50)[0] == 1.0
    with pytest.raises(ValueError, match="same first dim"):
        bootstrap_ci(accuracy_metric, y, pred[:3])


def test_paired_bootstrap_identical_and_different_predictors():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 400)
    pred = np.where(rng.uniform(size=400) < 0.75, y, 1 - y)
    same = paired_bootstrap(accuracy_metric, y, pred, pred.copy())
    assert same["difference"] == 0 and same["p_value"] == 1.0 and not same["significant"]
    better = np.where(rng.uniform(size=400) < 0.95, y, 1 - y)
    result = paired_bootstrap(accuracy_metric, y, better, pred)
    assert result["difference"] > 0.1 and result["p_value"] < 0.01 and result["significant"]
    assert result["ci_low"] > 0
    # a tiny difference on few samples is not significant
    nearly = pred.copy()
    nearly[0] = 1 - nearly[0]
    assert not paired_bootstrap(accuracy_metric, y, nearly, pred)["significant"]


def test_degenerate_distributions_warn_and_are_never_significant():
    from polymodal.metrics.bootstrap import DegenerateBootstrapWarning

    y = np.array([0, 1, 2])
    with pytest.warns(DegenerateBootstrapWarning, match="all 200 resamples give 1"):
        assert bootstrap_ci(accuracy_metric, y, y, n_resamples=200) == (1.0, 1.0, 1.0)
    result = paired_bootstrap(accuracy_metric, y, y, (y + 1) % 3, n_resamples=200)
    assert result["degenerate"] and not result["significant"] and result["warnings"]
    assert result["p_value"] == pytest.approx(2 / 201)  # (1 + 0) / (R + 1), doubled: never 0


def test_macro_f1_metric_follows_sklearn_default_labels_per_resample():
    """Classes absent from a (re)sample's targets and predictions are left out; predicted-only classes count."""
    rng = np.random.default_rng(8)
    y, pred = rng.integers(0, 3, (50, 12)), rng.integers(0, 4, (50, 12))  # class 3 only ever predicted
    y[:10] = np.where(y[:10] == 2, 0, y[:10])  # some rows lack class 2 in their targets
    ours = macro_f1_metric(y, pred, 6)  # classes 4, 5 never occur: no effect
    ref = [f1_score(y[r], pred[r], average="macro", zero_division=0) for r in range(50)]
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    perfect = np.array([0, 0, 1, 1])
    assert macro_f1_metric(perfect, perfect, 3) == 1.0  # a third class with no support is not an F1 of 0
