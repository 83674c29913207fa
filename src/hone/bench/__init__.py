"""Benchmarks with honest statistics: latency/throughput sweeps over batch, threads and variants."""

from hone.bench.stats import LatencyStats, median_ci_rel, summarize
from hone.bench.sweep import VARIANTS, BenchConfigResult, BenchResult, applicable_variants, bench

__all__ = [
    "VARIANTS",
    "BenchConfigResult",
    "BenchResult",
    "LatencyStats",
    "applicable_variants",
    "bench",
    "median_ci_rel",
    "summarize",
]
