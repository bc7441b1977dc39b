"""Exact small-sample statistics pinned to scipy.stats (binomtest, beta): intervals, McNemar, paired CI."""

import numpy as np
import pytest
from scipy import stats

from polymodal.metrics.exact import (
    betainc,
    binom_cdf,
    clopper_pearson,
    mcnemar_exact,
    paired_difference_ci,
    wilson,
)

COUNTS = [(k, n) for n in (1, 2, 3, 5, 10, 37, 100, 1000, 20000) for k in sorted({0, 1, n // 3, n // 2, n - 1, n})]


@pytest.mark.parametrize("k,n", COUNTS)
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_clopper_pearson_and_wilson_match_scipy(k, n, confidence):
    ref = stats.binomtest(k, n).proportion_ci(confidence, method="exact")
    assert clopper_pearson(k, n, confidence) == pytest.approx((ref.low, ref.high), abs=1e-10)
    ref = stats.binomtest(k, n).proportion_ci(confidence, method="wilson")
    assert wilson(k, n, confidence) == pytest.approx((ref.low, ref.high), abs=1e-10)


def test_three_of_three_is_not_a_zero_width_interval():
    low, high = clopper_pearson(3, 3)
    assert low == pytest.approx(0.025 ** (1 / 3), abs=1e-12) and high == 1.0  # [0.292, 1], not [1, 1]
    assert clopper_pearson(0, 3)[0] == 0.0 and clopper_pearson(0, 3)[1] == pytest.approx(1 - 0.025 ** (1 / 3))


@pytest.mark.parametrize("b,c", [(3, 0), (0, 3), (1, 1), (5, 0), (6, 1), (12, 3), (20, 4), (40, 25), (0, 0), (300, 260)])
def test_mcnemar_exact_matches_the_binomial_test(b, c):
    expected = 1.0 if b + c == 0 else stats.binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, abs=1e-12)
    assert mcnemar_exact(3, 0) == pytest.approx(0.25)  # the case: 3 samples, A right and B wrong on all


def test_betainc_and_binomial_cdf_match_scipy():
    rng = np.random.default_rng(0)
    for a, b, x in zip(rng.uniform(0.2, 300, 200), rng.uniform(0.2, 300, 200), rng.uniform(0, 1, 200)):
        assert betainc(a, b, x) == pytest.approx(stats.beta.cdf(x, a, b), abs=1e-11)
    for n in (1, 7, 50, 999):
        for k in (-1, 0, n // 2, n - 1, n):
            assert binom_cdf(k, n, 0.3) == pytest.approx(stats.binom.cdf(k, n, 0.3), abs=1e-11)


def test_paired_interval_inverts_the_exact_test():
    """The conditional interval holds 0 exactly when McNemar's exact test is not significant (5%)."""
    for b in range(0, 30):
        for c in range(0, 30 - b):
            if b + c == 0:
                continue
            low, high = paired_difference_ci(b, c, 40)
            assert low <= (b - c) / 40 <= high
            assert (low <= 0 <= high) == (mcnemar_exact(b, c) >= 0.05), (b, c)
    assert paired_difference_ci(3, 0, 3) == pytest.approx((2 * 0.025 ** (1 / 3) - 1, 1.0))
    assert paired_difference_ci(0, 0, 5) == (0.0, 0.0)


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="0 <= k <= n"):
        clopper_pearson(4, 3)
    with pytest.raises(ValueError, match="confidence"):
        wilson(1, 3, 1.5)
    with pytest.raises(ValueError, match="b, c"):
        paired_difference_ci(3, 3, 5)
