"""Benchmarks with honest statistics: latency/throughput sweeps over batch, threads and variants,
and interleaved comparisons of several models in one race (``compare``)."""

from hone.bench.compare import Contender, compare
from hone.bench.stats import LatencyStats, median_ci_rel, summarize
from hone.bench.sweep import VARIANTS, applicable_variants, bench
from hone.bench.types import BenchConfigResult, BenchResult

__all__ = [
    "VARIANTS",
    "BenchConfigResult",
    "BenchResult",
    "Contender",
    "LatencyStats",
    "applicable_variants",
    "bench",
    "compare",
    "median_ci_rel",
    "summarize",
]
