"""Latency/throughput sweeps over batch sizes and variants (PyTorch eager, ORT optimizations off/on).

At each batch the variants race in interleaved blocks (``hone.bench.compare``): every variant runs
one block per round, for up to ``budget_s`` seconds each in all, and the race stops early once every
median's 95% confidence interval is within ``rel_tol`` of the median (after at least ``min_runs``
runs each); a configuration that ran out of time is reported as not stable, never silently.
Speedups are over PyTorch eager (or, without a torch source, onnxruntime with optimizations off)
at the same batch, in the same race.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np

from hone.bench.compare import (
    ROUNDS,
    Contender,
    applicable_variants,
    check_variant,
    compare,
    machine_summary,
)
from hone.bench.stats import median_ci_rel
from hone.bench.types import VARIANTS, BenchConfigResult, BenchResult, Variant
from hone.errors import OptionError
from hone.model import Model
from hone.runtime import check_provider
from hone.specs import has_batch_axis

logger = logging.getLogger(__name__)

# Even past the budget, take this many samples so the median has a finite confidence interval.
_MIN_SAMPLES_FOR_CI = 5
_BASELINES: tuple[Variant, ...] = ("torch-eager", "ort-disabled")
DEFAULT_BATCHES = (1, 8)


def bench(
    model: Model,
    *,
    batches: Sequence[int] | None = None,
    threads: int | None = None,
    provider: str = "cpu",
    variants: Sequence[str] | None = None,
    rel_tol: float = 0.02,
    min_runs: int = 10,
    max_runs: int = 2000,
    warmup_runs: int = 3,
    budget_s: float = 3.0,
    seed: int = 0,
    on_config: Callable[[str, int], None] | None = None,
) -> BenchResult:
    """Measure every (variant, batch) configuration of ``model``; see the module docstring. Without
    ``batches``: 1 and 8, or 1 alone for a model with no batch axis."""
    if batches is None:
        batches = DEFAULT_BATCHES if has_batch_axis(model.inputs) else (1,)
        if len(batches) == 1:
            logger.warning(
                "%s has no batch axis (no symbolic dim shared by its inputs and outputs); "
                "benching batch 1 only",
                model.name,
            )
    if not batches or any(b < 1 for b in batches):
        raise OptionError(f"batch sizes must be positive integers, got {list(batches)}")
    if rel_tol <= 0 or budget_s <= 0 or min_runs < 1 or warmup_runs < 0:
        raise OptionError("rel_tol and budget_s must be positive, min_runs >= 1, warmup_runs >= 0")
    check_provider(provider)
    chosen = [check_variant(v) for v in variants] if variants else applicable_variants(model, provider)
    baseline = next((v for v in _BASELINES if v in chosen), None)
    return compare(
        [Contender(variant, model, variant) for variant in chosen],
        baseline=baseline,
        baseline_description=None if baseline is None else f"{baseline} on {model.name}",
        batches=batches,
        threads=threads,
        provider=provider,
        rel_tol=rel_tol,
        min_runs=min_runs,
        max_runs=max_runs,
        warmup_runs=warmup_runs,
        budget_s=budget_s,
        rounds=ROUNDS,
        seed=seed,
        on_config=on_config,
    )


def _measure(
    run_once: Callable[[], object],
    rel_tol: float,
    min_runs: int,
    max_runs: int,
    warmup_runs: int,
    budget_s: float,
) -> tuple[list[float], int, float]:
    """Warm up, then time single runs until the median is stable or the budget is spent (one runner
    alone; for scripts that time one thing, never for a comparison)."""
    start = time.perf_counter()
    for _ in range(warmup_runs):
        run_once()
    samples: list[float] = []
    check_every = 5
    while len(samples) < max_runs:
        began = time.perf_counter()
        run_once()
        samples.append((time.perf_counter() - began) * 1000.0)
        spent = time.perf_counter() - start
        if len(samples) >= min_runs and len(samples) % check_every == 0:
            if median_ci_rel(np.asarray(samples)) <= rel_tol:
                break
        if spent >= budget_s and len(samples) >= _MIN_SAMPLES_FOR_CI:
            break
    return samples, warmup_runs, time.perf_counter() - start


def fill_speedups(result: BenchResult) -> None:
    """Set each configuration's speedup over the baseline variant at the same batch (for results merged
    from separate runs, e.g. by ``merge``; ``bench`` and ``compare`` set them from one race)."""
    baseline = next((v for v in _BASELINES if v in result.variants), None)
    if baseline is None:
        return
    for config in result.configs:
        base = result.config(baseline, config.batch)
        if base is not None:
            config.baseline_variant = baseline
            config.speedup_vs_baseline = base.p50_ms / config.p50_ms


def merge(result: BenchResult, other: BenchResult, prefix: str) -> None:
    """Add ``other``'s configurations to ``result`` as variants ``<prefix>+<variant>``.

    The two were measured in separate runs, so their ratios carry the machine's drift between
    them; to compare two models, race them with ``hone.bench.compare.compare`` instead.
    """
    for config in other.configs:
        config.variant = f"{prefix}+{config.variant}"
        config.speedup_per_round = []
        result.configs.append(config)
    result.variants.extend(f"{prefix}+{variant}" for variant in other.variants)
    result.method = "merged from separate runs"
    fill_speedups(result)


__all__ = [
    "VARIANTS",
    "BenchConfigResult",
    "BenchResult",
    "applicable_variants",
    "bench",
    "fill_speedups",
    "machine_summary",
    "merge",
]
