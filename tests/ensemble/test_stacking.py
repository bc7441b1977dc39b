"""The torch multinomial logistic regression of --method stack, pinned to scikit-learn's LogisticRegression, and
the combination rules computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polymodal.ensemble import combine_probabilities
from polymodal.ensemble.stacking import fit_logistic_regression, stack_features


@pytest.mark.parametrize("C", [1.0, 0.1])
def test_fit_matches_sklearn_logistic_regression(C):
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 6))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.7, size=90) > 0).astype(int) + (x[:, 2] > 0.8)
    reference = sklearn.LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit(x, y)
    weight, bias = fit_logistic_regression(torch.tensor(x), torch.tensor(y), 3, C=C)
    np.testing.assert_allclose(weight.numpy(), reference.coef_, atol=1e-4)
    np.testing.assert_allclose(bias.numpy(), reference.intercept_, atol=1e-4)
    probs = (torch.tensor(x) @ weight.T + bias).softmax(-1).numpy()
    np.testing.assert_allclose(probs, reference.predict_proba(x), atol=1e-5)


def test_fit_refuses_bad_input():
    with pytest.raises(ValueError, match="C \\(inverse L2 strength\\) must be > 0"):
        fit_logistic_regression(torch.zeros(4, 2), torch.zeros(4), 2, C=0)
    with pytest.raises(ValueError, match="targets must lie in"):
        fit_logistic_regression(torch.zeros(4, 2), torch.tensor([0, 1, 2, 3]), 2)
    with pytest.raises(ValueError, match="N > 0"):
        fit_logistic_regression(torch.zeros(0, 2), torch.zeros(0), 2)


# Two members, two samples, three classes.
P = torch.tensor([[[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]],
                  [[0.1, 0.7, 0.2], [0.3, 0.3, 0.4]]], dtype=torch.float64)


def test_mean_is_the_average_probability():
    expected = torch.tensor([[0.35, 0.5, 0.15], [0.25, 0.4, 0.35]], dtype=torch.float64)
    torch.testing.assert_close(combine_probabilities(P, "mean"), expected)


def test_vote_counts_votes_and_breaks_ties_by_mean_probability():
    # sample 0: votes class 0 and class 1 (a tie) → mean prob picks class 1 (0.5 > 0.35)
    # sample 1: votes class 1 and class 2 (a tie) → mean prob picks class 1 (0.40 > 0.35)
    out = combine_probabilities(P, "vote")
    expected = (torch.tensor([[1, 1, 0], [0, 1, 1]], dtype=torch.float64)
                + 0.5 * combine_probabilities(P, "mean")) / 2.5
    torch.testing.assert_close(out, expected)
    assert out.argmax(-1).tolist() == [1, 1]
    torch.testing.assert_close(out.sum(-1), torch.ones(2, dtype=torch.float64))
    # three members: a 2-1 majority wins even against a much larger mean probability of the minority class
    three = torch.tensor([[[0.34, 0.33, 0.33]], [[0.34, 0.33, 0.33]], [[0.0, 1.0, 0.0]]], dtype=torch.float64)
    assert combine_probabilities(three, "vote").argmax(-1).tolist() == [0]


def test_weighted_normalises_the_weights():
    out = combine_probabilities(P, "weighted", torch.tensor([3.0, 1.0]))
    torch.testing.assert_close(out, 0.75 * P[0] + 0.25 * P[1])


def test_stack_is_softmax_of_the_linear_model_on_member_log_probs():
    weight = torch.arange(18, dtype=torch.float64).reshape(3, 6) / 10
    bias = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    features = torch.cat([P[0].log(), P[1].log()], dim=1)  # [B, M*C], member 0 first
    torch.testing.assert_close(stack_features(P.log()), features)
    expected = (features @ weight.T + bias).softmax(-1)
    torch.testing.assert_close(combine_probabilities(P, "stack", stacker=(weight, bias)), expected)


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown ensemble method 'max'"):
        combine_probabilities(P, "max")
