"""Honest latency statistics: percentiles, spread, and when a median is stable enough to stop.

Stability uses the distribution-free confidence interval of the median (order statistics of a
binomial(n, 1/2)), so no normality is assumed: latency samples are skewed and have long tails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# z for a two-sided 95% interval.
_Z95 = 1.959963984540054


@dataclass
class LatencyStats:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    stdev_ms: float
    min_ms: float
    max_ms: float
    iqr_ms: float
    # Half-width of the median's 95% confidence interval, relative to the median.
    median_ci_rel: float


def median_ci_rel(samples_ms: np.ndarray) -> float:
    """Relative half-width of the 95% CI of the median; inf with fewer than 5 samples."""
    n = len(samples_ms)
    if n < 5:
        return math.inf
    ordered = np.sort(samples_ms)
    half = _Z95 * math.sqrt(n) / 2.0
    low = max(int(math.floor(n / 2.0 - half)), 0)
    high = min(int(math.ceil(n / 2.0 + half)), n - 1)
    median = float(np.median(ordered))
    if median <= 0:
        return math.inf
    return float((ordered[high] - ordered[low]) / (2.0 * median))


def summarize(samples_ms: list[float] | np.ndarray) -> LatencyStats:
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("summarize needs at least one sample")
    p25, p50, p75, p90, p99 = np.percentile(values, [25, 50, 75, 90, 99])
    return LatencyStats(
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        mean_ms=float(values.mean()),
        stdev_ms=float(values.std(ddof=1)) if values.size > 1 else 0.0,
        min_ms=float(values.min()),
        max_ms=float(values.max()),
        iqr_ms=float(p75 - p25),
        median_ci_rel=median_ci_rel(values),
    )
