"""Statistics of the tables, pure functions: Wilson and t intervals, pass@k, McNemar's test, the paired bootstrap."""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion successes / n (95% by default); n must be positive."""
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # The bounds at p = 0 and p = 1 are exactly 0 and 1; rounding would leave them a hair inside.
    return (0.0 if successes == 0 else center - half), (1.0 if successes == n else center + half)


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


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of n samples with c correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1 - k / i for i in range(n - c + 1, n + 1))


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: b and c are the discordant pairs (only one model right)."""
    from scipy import stats

    return stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0


def paired_bootstrap(
    differences: Sequence[float], resamples: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """Percentile 95% interval of the mean paired difference over questions resampled with replacement,
    and the bootstrap two-sided p-value (twice the share of resampled means on the far side of 0)."""
    import numpy as np
    from scipy import stats

    data = np.asarray(differences, dtype=float)
    if np.all(data == data[0]):  # every resample is the same mean; scipy calls this degenerate
        return float(data[0]), float(data[0]), 1.0 if data[0] == 0 else 0.0
    result = stats.bootstrap(
        (data,), np.mean, n_resamples=resamples, method="percentile", batch=1000, rng=np.random.default_rng(seed)
    )
    means = result.bootstrap_distribution
    p = min(1.0, 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return float(result.confidence_interval.low), float(result.confidence_interval.high), p
