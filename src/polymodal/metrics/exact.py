"""Exact small-sample statistics for proportions and paired comparisons, in plain Python (no scipy at runtime).

- :func:`clopper_pearson`: the exact binomial interval for k successes in n trials (Clopper & Pearson 1934),
  ``Beta(α/2; k, n−k+1)`` to ``Beta(1−α/2; k+1, n−k)``; never zero-width for n ≥ 1 (3/3 → [0.292, 1]).
- :func:`wilson`: the Wilson score interval (Wilson 1927), for reference next to Clopper–Pearson.
- :func:`mcnemar_exact`: McNemar's exact test of paired correctness = a two-sided binomial (sign) test on the
  discordant pairs, b (A right, B wrong) vs c (A wrong, B right) under Bin(b + c, 1/2) (McNemar 1947; the
  ``exact=True`` form of statsmodels' ``mcnemar``): 3 vs 0 → p = 2·0.5³ = 0.25.
- :func:`paired_difference_ci`: the exact conditional interval of acc(A) − acc(B) = (b − c)/n that inverts the
  same sign test: Clopper–Pearson on b/(b + c), mapped by d = (b + c)/n · (2π − 1).

The tests pin every number to ``scipy.stats`` (``beta.ppf``, ``binomtest``).
"""

from __future__ import annotations

import math
from statistics import NormalDist

# Below this many discordant pairs `eval --compare` uses the exact test (the usual rule of thumb for McNemar's
# chi-square approximation, also statsmodels' guidance); the same threshold marks a small paired sample.
EXACT_DISCORDANT_BELOW = 25


def _continued_fraction(a: float, b: float, x: float) -> float:
    """Lentz's evaluation of the incomplete-beta continued fraction (Numerical Recipes §6.4, betacf)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b) for a, b > 0 and 0 ≤ x ≤ 1 (the Beta(a, b) CDF at x)."""
    if not (a > 0 and b > 0):
        raise ValueError(f"betainc needs a, b > 0; got a={a}, b={b}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):  # the continued fraction converges fast on this side; else use symmetry
        return math.exp(log_front) * _continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _continued_fraction(b, a, 1.0 - x) / b


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X ≤ k) for X ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return 1.0 - betainc(k + 1, n - k, p)


def _beta_ppf(q: float, a: float, b: float) -> float:
    """Quantile of Beta(a, b) by bisection on :func:`betainc` (monotone in x; 80 halvings → ~1e-24)."""
    low, high = 0.0, 1.0
    for _ in range(80):
        mid = 0.5 * (low + high)
        if betainc(a, b, mid) < q:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def _check_counts(k: int, n: int, confidence: float) -> None:
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1; got k={k}, n={n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) interval of a binomial proportion k/n → (low, high) in [0, 1]."""
    _check_counts(k, n, confidence)
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else _beta_ppf(alpha / 2, k, n - k + 1)
    high = 1.0 if k == n else _beta_ppf(1 - alpha / 2, k + 1, n - k)
    return low, high


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of k/n (no continuity correction) → (low, high)."""
    _check_counts(k, n, confidence)
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b and c (1.0 when there are none)."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0; got b={b}, c={c}")
    m = b + c
    if m == 0:
        return 1.0
    return min(1.0, 2.0 * binom_cdf(min(b, c), m, 0.5))


def paired_difference_ci(b: int, c: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact conditional CI of the paired accuracy difference (b − c)/n given the b + c discordant pairs.

    It contains 0 exactly when :func:`mcnemar_exact` is not significant at 1 − confidence. (0, 0) when no
    pair is discordant (the caller must say that such an interval is degenerate).
    """
    if n < 1 or b < 0 or c < 0 or b + c > n:
        raise ValueError(f"need b, c >= 0 and b + c <= n >= 1; got b={b}, c={c}, n={n}")
    m = b + c
    if m == 0:
        return 0.0, 0.0
    low, high = clopper_pearson(b, m, confidence)
    return m / n * (2 * low - 1), m / n * (2 * high - 1)


__all__ = [
    "EXACT_DISCORDANT_BELOW",
    "betainc",
    "binom_cdf",
    "clopper_pearson",
    "mcnemar_exact",
    "paired_difference_ci",
    "wilson",
]
