"""Statistics of the tables, pure functions over questions (the unit of every interval and test): Wilson
intervals for bounded means, a log-scale t interval for counts, pass@k, McNemar's exact test with the interval
it inverts, and the paired bootstrap with an interval and p-value read off one distribution."""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054
RESAMPLES = 9_999  # the bootstrap's; with the observed sample, 10,000: p is a multiple of 1 / 10,000


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion successes / n (95% by default); n must be positive."""
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # The bounds at p = 0 and p = 1 are exactly 0 and 1; rounding would leave them a hair inside.
    return (0.0 if successes == 0 else center - half), (1.0 if successes == n else center + half)


def bounded_interval(values: Sequence[float], low: float = 0.0, high: float = 1.0) -> tuple[float, float]:
    """The Wilson interval of the mean of `values`, each in [low, high], with one question one trial.

    A value in [0, 1] has a variance of at most mean * (1 - mean), a coin's, so the Wilson interval of a
    share of responses (k > 1), a pass@k or a reward is conservative, stays in the range and never has zero
    width: "100.0 [100.0, 100.0]" from three questions would claim a certainty the data do not give.
    """
    span = high - low
    successes = min(len(values), max(0.0, sum((value - low) / span for value in values)))
    bottom, top = wilson_interval(successes, len(values))
    return low + span * bottom, low + span * top


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float | None, float | None]:
    """The t interval of a mean: mean +- t(n-1) * sd / sqrt(n); None for fewer than two values."""
    from scipy import stats

    n = len(values)
    if n < 2:
        return None, None
    mean = sum(values) / n
    sd = math.sqrt(sum((value - mean) ** 2 for value in values) / (n - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def count_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float | None, float | None]:
    """The t interval of a mean of counts (words, characters) on the log scale, mean * exp(+-t * se / mean):
    it stays above 0, where the plain t interval of skewed counts does not ("362.6 [-9.8, 735.0]")."""
    low, high = mean_interval(values, confidence)
    if low is None or high is None:
        return None, None
    mean = sum(values) / len(values)
    if mean <= 0:  # every count is 0
        return 0.0, 0.0
    ratio = math.exp((high - mean) / mean)
    return mean / ratio, mean * ratio


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of n samples with c correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1 - k / i for i in range(n - c + 1, n + 1))


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: b and c are the discordant pairs (only one model right)."""
    from scipy import stats

    return stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0


def mcnemar_interval(b: int, c: int, n: int) -> tuple[float, float]:
    """The 95% interval of the paired difference (b - c) / n that McNemar's exact test inverts.

    Given the b + c discordant pairs, b is Binomial(b + c, q) and the difference is (b + c) / n * (2q - 1);
    the Clopper-Pearson interval of q holds 1/2 exactly when the exact test's p (central, as the binomial is
    symmetric at 1/2) is at least 0.05, so interval and test agree. With no discordant pair the difference
    is within +- the Wilson upper bound of the discordant share, which is never zero wide.
    """
    from scipy import stats

    if b + c == 0:
        bound = wilson_interval(0, n)[1]
        return -bound, bound
    low = stats.beta.ppf(0.025, b, c + 1) if b else 0.0
    high = stats.beta.ppf(0.975, b + 1, c) if c else 1.0
    share = (b + c) / n
    return share * (2 * float(low) - 1), share * (2 * float(high) - 1)


def paired_bootstrap(
    differences: Sequence[float], resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float, float]:
    """Percentile 95% interval of the mean paired difference (each in [-1, 1]) over questions resampled with
    replacement, and the two-sided p from the same resampled means, 2 (1 + m) / (resamples + 1) with m the
    means on the far side of 0: never 0, at least 2 / (resamples + 1), and below 0.05 exactly when the
    interval excludes 0 (its bounds are the means ranked (resamples + 1) / 40 - 1 from either end).

    The questions resampled include one gained and one lost (+1 and -1), as Agresti and Min add to the
    discordant cells of paired proportions: n equal differences would otherwise give an interval of one
    point ("+100.0 [+100.0, +100.0]") however small n is; with hundreds of questions they change nothing.
    """
    import numpy as np

    data = np.asarray([*differences, 1.0, -1.0], dtype=float)
    rng, means = np.random.default_rng(seed), []
    for start in range(0, resamples, 1000):  # batches keep memory at 1,000 x n indices
        rows = min(1000, resamples - start)
        means.append(data[rng.integers(0, len(data), size=(rows, len(data)))].mean(axis=1))
    ranked = np.sort(np.concatenate(means))
    rank = round((resamples + 1) * 0.025) - 1  # 1-based rank of each bound from its end
    far = min(int(np.sum(ranked <= 0)), int(np.sum(ranked >= 0)))
    return float(ranked[rank - 1]), float(ranked[resamples - rank]), min(1.0, 2 * (1 + far) / (resamples + 1))
