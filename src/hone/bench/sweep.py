"""Latency/throughput sweeps over batch sizes and variants (PyTorch eager, ORT optimizations off/on).

Each configuration warms up, then runs until the median's 95% confidence interval is within
``rel_tol`` of the median (after at least ``min_runs``), or until ``budget_s`` runs out; a
configuration that ran out of time is reported as not stable, never silently.
"""

from __future__ import annotations

import gc
import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from hone.bench.memory import PeakMemory
from hone.bench.stats import median_ci_rel, summarize
from hone.data import check_batchable, synthesize
from hone.errors import OptionError
from hone.model import Model
from hone.runtime import Session, SessionConfig, check_provider, default_threads

logger = logging.getLogger(__name__)

VARIANTS = ("torch-eager", "ort-disabled", "ort-all")
# Even past the budget, take this many samples so the median has a finite confidence interval.
_MIN_SAMPLES_FOR_CI = 5


@dataclass
class BenchConfigResult:
    """One measured configuration: a variant at a batch size, thread count and provider."""

    model: str
    variant: str
    provider: str
    batch: int
    threads: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    stdev_ms: float
    min_ms: float
    max_ms: float
    iqr_ms: float
    median_ci_rel: float
    throughput: float  # samples per second at the median latency
    runs: int
    warmup_runs: int
    seconds: float
    stable: bool
    peak_mem_mb: float  # growth of process RSS during this configuration (session + activations)
    peak_rss_mb: float  # the process's resident set at its peak during this configuration
    # p50 of the baseline variant at the same batch divided by this p50 (measured in the same run).
    speedup_vs_baseline: float | None = None
    baseline_variant: str | None = None


@dataclass
class BenchResult:
    model: str
    provider: str
    threads: int
    batches: list[int]
    variants: list[str]
    rel_tol: float
    budget_s: float
    machine: dict[str, str]
    configs: list[BenchConfigResult] = field(default_factory=list)

    @property
    def unstable(self) -> list[BenchConfigResult]:
        return [c for c in self.configs if not c.stable]

    def best(self, batch: int) -> BenchConfigResult | None:
        at_batch = [c for c in self.configs if c.batch == batch]
        return min(at_batch, key=lambda c: c.p50_ms, default=None)


def applicable_variants(model: Model, provider: str) -> list[str]:
    variants = ["ort-disabled", "ort-all"]
    if model.torch_factory is not None and provider == "cpu":
        variants.insert(0, "torch-eager")
    return variants


def bench(
    model: Model,
    *,
    batches: Sequence[int] = (1, 8),
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
    """Measure every (variant, batch) configuration of ``model``; see the module docstring."""
    if not batches or any(b < 1 for b in batches):
        raise OptionError(f"batch sizes must be positive integers, got {list(batches)}")
    if rel_tol <= 0 or budget_s <= 0 or min_runs < 1 or warmup_runs < 0:
        raise OptionError("rel_tol and budget_s must be positive, min_runs >= 1, warmup_runs >= 0")
    check_provider(provider)
    threads = threads or default_threads()
    possible = applicable_variants(model, provider)
    chosen = list(variants) if variants else possible
    for variant in chosen:
        if variant not in VARIANTS:
            raise OptionError(f"variant {variant!r} is unknown; choose from {', '.join(VARIANTS)}")
        if variant not in possible:
            raise OptionError(
                f"variant {variant!r} does not apply to {model.name} on {provider} "
                f"(it applies: {', '.join(possible)})"
            )
    for batch in batches:
        check_batchable(model.inputs, batch)

    result = BenchResult(
        model=model.name,
        provider=provider,
        threads=threads,
        batches=list(batches),
        variants=chosen,
        rel_tol=rel_tol,
        budget_s=budget_s,
        machine=machine_summary(),
    )
    for variant in chosen:
        for batch in batches:
            if on_config is not None:
                on_config(variant, batch)
            feeds = synthesize(model.inputs, batch=batch, dims=model.default_dims, seed=seed)
            gc.collect()
            with PeakMemory() as memory:
                run_once = _make_runner(model, variant, provider, threads, feeds)
                samples, warm, seconds = _measure(
                    run_once, rel_tol, min_runs, max_runs, warmup_runs, budget_s
                )
                del run_once
            stats = summarize(samples)
            stable = stats.median_ci_rel <= rel_tol
            if not stable:
                logger.warning(
                    "%s %s batch %d: median not stable after %d runs in %.1fs (CI ±%.1f%%)",
                    model.name, variant, batch, len(samples), seconds, 100 * stats.median_ci_rel,
                )
            result.configs.append(
                BenchConfigResult(
                    model=model.name,
                    variant=variant,
                    provider=provider,
                    batch=batch,
                    threads=threads,
                    p50_ms=stats.p50_ms,
                    p90_ms=stats.p90_ms,
                    p99_ms=stats.p99_ms,
                    mean_ms=stats.mean_ms,
                    stdev_ms=stats.stdev_ms,
                    min_ms=stats.min_ms,
                    max_ms=stats.max_ms,
                    iqr_ms=stats.iqr_ms,
                    median_ci_rel=stats.median_ci_rel,
                    throughput=batch * 1000.0 / stats.p50_ms,
                    runs=len(samples),
                    warmup_runs=warm,
                    seconds=seconds,
                    stable=stable,
                    peak_mem_mb=memory.delta_mb,
                    peak_rss_mb=memory.peak_mb,
                )
            )
    fill_speedups(result)
    return result


def _make_runner(
    model: Model, variant: str, provider: str, threads: int, feeds: dict[str, np.ndarray]
) -> Callable[[], object]:
    if variant == "torch-eager":
        import torch

        torch.set_num_threads(threads)
        assert model.torch_factory is not None
        module = model.torch_factory()
        args = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in model.inputs]

        def run_eager() -> object:
            with torch.inference_mode():
                return module(*args)

        return run_eager
    optimization = "all" if variant == "ort-all" else "disabled"
    session = Session(model, SessionConfig(provider=provider, threads=threads, optimization=optimization))
    return lambda: session.run(feeds)


def _measure(
    run_once: Callable[[], object],
    rel_tol: float,
    min_runs: int,
    max_runs: int,
    warmup_runs: int,
    budget_s: float,
) -> tuple[list[float], int, float]:
    """Warm up, then time single runs until the median is stable or the budget is spent."""
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
    """Set each configuration's speedup over the baseline variant at the same batch."""
    baseline = next((v for v in ("torch-eager", "ort-disabled") if v in result.variants), None)
    if baseline is None:
        return
    for config in result.configs:
        base = next(
            (c for c in result.configs if c.variant == baseline and c.batch == config.batch), None
        )
        if base is not None:
            config.baseline_variant = baseline
            config.speedup_vs_baseline = base.p50_ms / config.p50_ms


def machine_summary() -> dict[str, str]:
    import onnxruntime
    import psutil

    summary = {
        "cpu": _cpu_name(),
        "physical_cores": str(psutil.cpu_count(logical=False)),
        "logical_cores": str(psutil.cpu_count()),
        "memory_gb": f"{psutil.virtual_memory().total / 2**30:.1f}",
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }
    try:
        import torch

        summary["torch"] = torch.__version__
    except ImportError:  # torch is optional for pure-ONNX work
        pass
    return summary


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def merge(result: BenchResult, other: BenchResult, prefix: str) -> None:
    """Add ``other``'s configurations to ``result`` as variants ``<prefix>+<variant>``.

    For comparing a rewritten model with its original in one table; speedups are recomputed
    against ``result``'s baseline, measured in the same run.
    """
    for config in other.configs:
        config.variant = f"{prefix}+{config.variant}"
        result.configs.append(config)
    result.variants.extend(f"{prefix}+{variant}" for variant in other.variants)
    fill_speedups(result)
