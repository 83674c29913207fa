"""Interleaved comparisons: several models or variants at one batch, timed in alternating blocks in
one process, so that every ratio between them comes from the same race. hone's one way to say
whether one model is faster than another: ``hone bench`` (``sweep.py``), ``hone run``'s bench
stage, the quantize speed gate (``hone.quantize.speed_gate``) and prune's timing all call it.

``compare(contenders, baseline=LABEL)`` takes ``Contender(label, model, variant)`` items (a variant
is how the model runs: PyTorch eager, onnxruntime with graph optimizations disabled, or all on).
At each batch it builds every contender's runner (under ``PeakMemory``: the session and its first
run), then calls ``hone.bench.race.race``: blocks of ``budget_s / rounds`` seconds, every contender
once per round, for up to ``rounds`` rounds. After ``MIN_ROUNDS`` rounds the race stops as soon as
every contender has ``min_runs`` samples and its median's 95% confidence interval is within
``rel_tol``; one that is not stable by the last round is reported as such, never silently.

Each configuration's p50/p90/p99 come from its pooled samples, its spread from the median of each
round's block (``round_p50_ms``), and ``speedup_vs_baseline`` is the baseline's p50 over its p50
at the same batch, with ``speedup_per_round`` the same ratio round by round. Two separate
measurements of two models on a busy machine can differ by more than the change being measured;
blocks that alternate put every burst of load into a block of each.
"""

from __future__ import annotations

import gc
import logging
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from hone.bench.memory import PeakMemory
from hone.bench.race import race
from hone.bench.stats import median_ci_rel, summarize
from hone.bench.types import VARIANTS, BenchConfigResult, BenchResult, Variant
from hone.data import check_batchable
from hone.data import feeds as sample_feeds
from hone.errors import OptionError
from hone.model import Model
from hone.runtime import Session, SessionConfig, check_provider, default_threads

logger = logging.getLogger(__name__)

ROUNDS = 5  # blocks per configuration at most: each block is budget_s / ROUNDS
MIN_ROUNDS = 3  # rounds before the stopping rule may end a race early


@dataclass(frozen=True)
class Contender:
    """One thing to time: ``model`` run as ``variant``, under ``label`` (unique within a comparison)."""

    label: str
    model: Model
    variant: Variant = "ort-all"


def check_variant(variant: str) -> Variant:
    """``variant`` as a ``Variant``; an OptionError naming the choices when it is none of them."""
    for known in VARIANTS:
        if variant == known:
            return known
    raise OptionError(f"variant {variant!r} is unknown; choose from {', '.join(VARIANTS)}")


def applicable_variants(model: Model, provider: str) -> list[Variant]:
    """The variants that can run ``model`` on ``provider`` (torch-eager: a torch-sourced model on cpu)."""
    variants: list[Variant] = ["ort-disabled", "ort-all"]
    if model.torch_factory is not None and provider == "cpu":
        variants.insert(0, "torch-eager")
    return variants


def compare(
    contenders: Sequence[Contender],
    *,
    baseline: str | None,
    baseline_description: str | None = None,
    batches: Sequence[int] = (1, 8),
    threads: int | None = None,
    provider: str = "cpu",
    rel_tol: float = 0.02,
    min_runs: int = 10,
    max_runs: int = 2000,
    warmup_runs: int = 3,
    budget_s: float = 3.0,
    rounds: int = ROUNDS,
    seed: int = 0,
    on_config: Callable[[str, int], None] | None = None,
) -> BenchResult:
    """Race ``contenders`` at each batch; speedups against the contender labelled ``baseline`` (None: none).

    ``budget_s`` is each configuration's share of the race at one batch; ``on_config(label, batch)``
    is called as each contender's runner is built. See the module docstring.
    """
    threads = _check(
        contenders,
        baseline,
        batches,
        provider,
        rel_tol,
        min_runs,
        max_runs,
        warmup_runs,
        budget_s,
        rounds,
        threads,
    )
    first = contenders[0] if baseline is None else next(c for c in contenders if c.label == baseline)
    result = BenchResult(
        model=first.model.name,
        provider=provider,
        threads=threads,
        batches=list(batches),
        variants=[c.label for c in contenders],
        rel_tol=rel_tol,
        budget_s=budget_s,
        machine=machine_summary(),
        baseline=baseline_description or baseline,
        method="interleaved",
        rounds=rounds,
    )
    by_label: dict[tuple[str, int], BenchConfigResult] = {}
    for batch in batches:
        for config in _race_batch(
            contenders,
            batch,
            threads,
            provider,
            rel_tol,
            min_runs,
            max_runs,
            warmup_runs,
            budget_s,
            rounds,
            seed,
            on_config,
        ):
            by_label[(config.variant, batch)] = config
        if baseline is not None:
            base = by_label[(baseline, batch)]
            for contender in contenders:
                config = by_label[(contender.label, batch)]
                config.baseline_variant = baseline
                config.speedup_vs_baseline = base.p50_ms / config.p50_ms
                config.speedup_per_round = [
                    b / r for b, r in zip(base.round_p50_ms, config.round_p50_ms, strict=False)
                ]
    # Contender by contender, then batch: the order of the table.
    result.configs = [by_label[(c.label, batch)] for c in contenders for batch in batches]
    return result


def _check(
    contenders: Sequence[Contender],
    baseline: str | None,
    batches: Sequence[int],
    provider: str,
    rel_tol: float,
    min_runs: int,
    max_runs: int,
    warmup_runs: int,
    budget_s: float,
    rounds: int,
    threads: int | None,
) -> int:
    """Every option, before any session is built; returns the thread count."""
    if not contenders:
        raise OptionError("compare needs at least one contender")
    labels = [c.label for c in contenders]
    if len(set(labels)) != len(labels):
        raise OptionError(f"contender labels must be unique, got {labels}")
    if baseline is not None and baseline not in labels:
        raise OptionError(f"baseline {baseline!r} is not one of the contenders ({', '.join(labels)})")
    if not batches or any(b < 1 for b in batches):
        raise OptionError(f"batch sizes must be positive integers, got {list(batches)}")
    if rel_tol <= 0 or budget_s <= 0 or min_runs < 1 or warmup_runs < 0 or max_runs < 1 or rounds < 1:
        raise OptionError(
            "rel_tol and budget_s must be positive, min_runs, max_runs and rounds >= 1, warmup_runs >= 0"
        )
    check_provider(provider)
    for contender in contenders:
        check_variant(contender.variant)
        possible = applicable_variants(contender.model, provider)
        if contender.variant not in possible:
            raise OptionError(
                f"variant {contender.variant!r} does not apply to {contender.model.name} on {provider} "
                f"(it applies: {', '.join(possible)})"
            )
        for batch in batches:
            check_batchable(contender.model.inputs, batch)
    return threads or default_threads()


def _race_batch(
    contenders: Sequence[Contender],
    batch: int,
    threads: int,
    provider: str,
    rel_tol: float,
    min_runs: int,
    max_runs: int,
    warmup_runs: int,
    budget_s: float,
    rounds: int,
    seed: int,
    on_config: Callable[[str, int], None] | None,
) -> list[BenchConfigResult]:
    """Build every contender's runner at ``batch``, race them, and summarize each one's samples."""
    runners: dict[str, Callable[[], object]] = {}
    memory: dict[str, PeakMemory] = {}
    for contender in contenders:
        if on_config is not None:
            on_config(contender.label, batch)
        feeds = sample_feeds(contender.model, batch=batch, seed=seed)
        gc.collect()
        with PeakMemory() as memory[contender.label]:
            runners[contender.label] = make_runner(
                contender.model, contender.variant, provider, threads, feeds
            )
            runners[contender.label]()  # the first run allocates the activations
    round_p50: dict[str, list[float]] = {label: [] for label in runners}
    seen = {label: 0 for label in runners}

    def record(_: int, timings: dict[str, list[float]]) -> None:
        for label, times in timings.items():
            round_p50[label].append(float(np.median(times[seen[label] :])))
            seen[label] = len(times)

    def stable(index: int, timings: dict[str, list[float]]) -> bool:
        if any(len(times) >= max_runs for times in timings.values()):
            return True
        if index + 1 < min(MIN_ROUNDS, rounds):
            return False
        return all(
            len(times) >= min_runs and median_ci_rel(np.asarray(times)) <= rel_tol
            for times in timings.values()
        )

    timings = race(
        runners,
        rounds=rounds,
        block_s=budget_s / rounds,
        on_round=record,
        until=stable,
        warmup_runs=warmup_runs,
        max_block_runs=max(1, -(-max_runs // rounds)),
    )
    runners.clear()
    gc.collect()
    configs = []
    for contender in contenders:
        samples = timings[contender.label]
        stats = summarize(samples)
        ok = stats.median_ci_rel <= rel_tol
        if not ok:
            logger.warning(
                "%s batch %d: median not stable after %d runs in %d rounds (CI ±%.1f%%)",
                contender.label,
                batch,
                len(samples),
                len(round_p50[contender.label]),
                100 * stats.median_ci_rel,
            )
        configs.append(
            BenchConfigResult(
                model=contender.model.name,
                variant=contender.label,
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
                warmup_runs=warmup_runs + 1,
                seconds=float(np.sum(samples)) / 1000.0,
                stable=ok,
                peak_mem_mb=memory[contender.label].delta_mb,
                peak_rss_mb=memory[contender.label].peak_mb,
                round_p50_ms=round_p50[contender.label],
            )
        )
    return configs


def make_runner(
    model: Model, variant: Variant, provider: str, threads: int, feeds: dict[str, np.ndarray]
) -> Callable[[], object]:
    """One call = one inference of ``model`` as ``variant`` on ``feeds``."""
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


def machine_summary() -> dict[str, str]:
    """The machine a measurement ran on: CPU, cores, memory, and the runtimes' versions."""
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
