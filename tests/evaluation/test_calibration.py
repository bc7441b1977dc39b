"""Calibration metrics vs a direct loop reference and scikit-learn."""

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss

from polymodal.evaluation.calibration import (
    brier_score,
    calibration_report,
    classwise_calibration_error,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_diagram,
)


def random_probs(n=500, c=4, seed=0, temperature=1.5):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * temperature
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(c, p=p) for p in probs ** 0.5 / (probs ** 0.5).sum(1, keepdims=True)])
    return y, probs


def loop_ece(y, probs, n_bins):
    """Textbook ECE with explicit (lo, hi] bins (bin 0 closed at 0)."""
    conf, pred = probs.max(1), probs.argmax(1)
    total, gaps = 0.0, []
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        in_bin = [(c > lo or (b == 0 and c >= lo)) and c <= hi for c in conf]
        idx = np.flatnonzero(in_bin)
        if len(idx):
            gap = abs((pred[idx] == y[idx]).mean() - conf[idx].mean())
            total += len(idx) / len(y) * gap
            gaps.append(gap)
    return total, max(gaps)


@pytest.mark.parametrize("n_bins", [5, 15])
def test_ece_and_mce_match_loop_reference(n_bins):
    y, probs = random_probs()
    ece_ref, mce_ref = loop_ece(y, probs, n_bins)
    assert expected_calibration_error(y, probs, n_bins) == pytest.approx(ece_ref, abs=1e-12)
    assert maximum_calibration_error(y, probs, n_bins) == pytest.approx(mce_ref, abs=1e-12)
    assert 0 < ece_ref <= mce_ref


def test_reliability_bins_match_sklearn_calibration_curve():
    y, probs = random_probs(seed=1)
    conf, correct = probs.max(1), (probs.argmax(1) == y).astype(int)
    acc_ref, conf_ref = calibration_curve(correct, conf, n_bins=10, strategy="uniform")
    diagram = reliability_diagram(y, probs, n_bins=10)
    nonempty = [i for i, c in enumerate(diagram["count"]) if c > 0]
    np.testing.assert_allclose([diagram["accuracy"][i] for i in nonempty], acc_ref, atol=1e-12)
    np.testing.assert_allclose([diagram["confidence"][i] for i in nonempty], conf_ref, atol=1e-12)
    assert sum(diagram["count"]) == len(y)
    assert all(diagram["accuracy"][i] is None for i in range(10) if i not in nonempty)


def test_perfectly_calibrated_predictor_has_small_ece():
    rng = np.random.default_rng(3)
    p = rng.uniform(0.5, 1.0, size=20000)
    y = (rng.uniform(size=p.size) < p).astype(int)  # class 1 is right with probability p
    probs = np.stack([1 - p, p], 1)
    assert expected_calibration_error(y, probs, 10) < 0.02
    overconfident = np.stack([1 - (p + 1) / 2, (p + 1) / 2], 1)
    assert expected_calibration_error(y, overconfident, 10) > 0.1


def test_brier_and_nll_match_sklearn():
    y, probs = random_probs(seed=2)
    assert negative_log_likelihood(y, probs) == pytest.approx(log_loss(y, probs, labels=range(4)), rel=1e-9)
    assert brier_score(y, probs) == pytest.approx(brier_score_loss(y, probs, labels=range(4)), rel=1e-9)
    yb = (y > 1).astype(int)
    pb = np.clip(probs[:, 2:].sum(1), 0, 1)
    # binary: ours sums both columns = 2 x sklearn's positive-class score
    assert brier_score(yb, pb) == pytest.approx(2 * brier_score_loss(yb, pb), rel=1e-9)


def test_classwise_ece_loop_reference():
    y, probs = random_probs(seed=4, c=3)
    ref = []
    for k in range(3):
        pk, yk = probs[:, k], (y == k)
        ids = np.searchsorted(np.linspace(0, 1, 11)[1:-1], pk)
        ref.append(sum((ids == b).mean() * abs(yk[ids == b].mean() - pk[ids == b].mean()) for b in range(10) if (ids == b).any()))
    assert classwise_calibration_error(y, probs, 10) == pytest.approx(np.mean(ref), abs=1e-12)


def test_report_multilabel_and_errors():
    rng = np.random.default_rng(5)
    probs = rng.uniform(size=(50, 3))
    y = (rng.uniform(size=(50, 3)) < probs).astype(int)
    report = calibration_report(y, probs, "multilabel", n_bins=10)
    assert report["brier"] == pytest.approx(((probs - y) ** 2).mean())
    assert report["nll"] == pytest.approx(log_loss(y.ravel(), probs.ravel()), rel=1e-9)
    with pytest.raises(ValueError, match="class index 5"):
        expected_calibration_error([5, 0], np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="unknown task"):
        calibration_report([0], [[1.0, 0.0]], "regression")
