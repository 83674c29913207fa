"""Latency statistics and the stopping rule of the benchmark loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hone.bench.stats import median_ci_rel, summarize
from hone.bench.sweep import _measure


def test_percentiles_and_spread_come_from_the_samples() -> None:
    stats = summarize(list(range(1, 101)))
    assert stats.p50_ms == pytest.approx(50.5)
    assert stats.p90_ms == pytest.approx(90.1)
    assert stats.p99_ms == pytest.approx(99.01)
    assert stats.min_ms == 1 and stats.max_ms == 100
    assert stats.iqr_ms == pytest.approx(49.5)


def test_the_median_interval_is_infinite_with_too_few_samples() -> None:
    assert math.isinf(median_ci_rel(np.array([1.0, 2.0, 3.0])))


def test_the_median_interval_shrinks_with_more_samples() -> None:
    rng = np.random.default_rng(0)
    few = median_ci_rel(rng.lognormal(0, 0.3, 20))
    many = median_ci_rel(rng.lognormal(0, 0.3, 2000))
    assert many < few / 4


def test_identical_timings_are_stable_at_once() -> None:
    assert median_ci_rel(np.full(10, 2.0)) == 0.0


def test_a_steady_workload_stops_early_once_the_median_is_stable() -> None:
    samples, warmup, _ = _measure(lambda: sum(range(2000)), rel_tol=0.5, min_runs=10,
                                  max_runs=5000, warmup_runs=2, budget_s=30.0)
    assert warmup == 2
    assert 10 <= len(samples) < 5000


def test_a_noisy_workload_stops_at_the_budget_and_is_not_stable() -> None:
    rng = np.random.default_rng(0)

    def noisy() -> None:
        # Work varies 1x..100x: the median cannot settle within 0.1% in a fraction of a second.
        sum(range(int(rng.integers(100, 10_000))))

    samples, _, seconds = _measure(noisy, rel_tol=0.001, min_runs=10, max_runs=100_000,
                                   warmup_runs=1, budget_s=0.3)
    assert seconds >= 0.3
    assert median_ci_rel(np.asarray(samples)) > 0.001
