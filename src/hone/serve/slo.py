"""SLO mode of ``hone serve``: pick the batcher's knobs from a latency target, then check them.

``--slo-p99-ms X`` asks for request latency p99 <= X ms. Triton and KServe leave the knobs to the
user (and to a separate tool, Model Analyzer, that sweeps configurations); hone measures this
model on this machine and decides:

1. **The latency-vs-batch curve.** Every instance runs batches of 1, 2, 4, ... samples at once (as
   they would when serving), each size until ``SECONDS_PER_SIZE`` or ``MAX_RUNS_PER_SIZE``; p50 and
   p99 of a batch's compute time and the samples/s it gives. It stops at the first size whose p99
   is above half the budget (no larger batch can fit) or at ``LARGEST_BATCH``.
2. **The choice.** Under load, a request that arrives just after a batch started waits for that
   batch, then runs in the next one: its latency is about ``2 x batch p99 + queue delay``. The
   budget is ``HEADROOM`` (80%) of the target, for what the curve does not see (HTTP parsing,
   noise). Among batch sizes with ``2 x p99 <= budget``, the one with the highest samples/s is
   taken (a smaller one when within 5%, for latency). The queue delay is what the budget leaves,
   at most one batch's p50: waiting longer than a batch takes gains less than running.
3. **The check.** A closed-loop load test through the real batcher (in-process) with as many
   clients as the instances can batch at once (``instances x max_batch_size``), for
   ``verify_seconds``. If its p99 misses the target, the next smaller batch size is tried.

The plan (curve, choice, prediction, check) is returned as a dataclass for the CLI to print.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from hone.data import feeds as sample_feeds
from hone.errors import OptionError
from hone.serve.config import BatchConfig, RepositoryEntry
from hone.serve.loadtest import run_level
from hone.serve.model_runner import ModelRunner
from hone.serve.types import LoadLevel

HEADROOM = 0.8
LARGEST_BATCH = 256
SECONDS_PER_SIZE = 0.4
MIN_RUNS_PER_SIZE = 5
MAX_RUNS_PER_SIZE = 100
VERIFY_ATTEMPTS = 3
# A larger batch must give this much more throughput to be preferred over a smaller one.
THROUGHPUT_MARGIN = 1.05


@dataclass(frozen=True)
class BatchPoint:
    """Compute time of one batch size with every instance busy, and the throughput it gives."""

    batch: int
    p50_ms: float
    p99_ms: float
    runs: int
    samples_per_s: float


@dataclass
class SloPlan:
    """What SLO mode measured, chose and verified for one model version."""

    model: str
    version: str
    target_p99_ms: float
    instances: int
    curve: list[BatchPoint]
    max_batch_size: int
    max_queue_delay_ms: float
    predicted_p99_ms: float
    checks: list[LoadLevel] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return bool(self.checks) and self.checks[-1].p99_ms <= self.target_p99_ms

    def batch_config(self, base: BatchConfig) -> BatchConfig:
        return BatchConfig(
            max_batch_size=self.max_batch_size,
            max_queue_delay_ms=self.max_queue_delay_ms,
            max_queue_size=base.max_queue_size,
            default_timeout_ms=base.default_timeout_ms,
            priority_levels=base.priority_levels,
            idle_dispatch=base.idle_dispatch,
        )

    def line(self) -> str:
        check = self.checks[-1] if self.checks else None
        measured = (
            f"checked with {check.concurrency} clients: p99 {check.p99_ms:.2f} ms, "
            f"{check.throughput_per_s:.0f} req/s"
            if check
            else "not checked"
        )
        verdict = "met" if self.met else "MISSED"
        return (
            f"hone serve: slo: {self.model} v{self.version} p99 <= {self.target_p99_ms:g} ms {verdict}: "
            f"max_batch_size {self.max_batch_size}, max_queue_delay_ms {self.max_queue_delay_ms:.2f} "
            f"(predicted p99 {self.predicted_p99_ms:.2f} ms; {measured})"
        )


def plan(entry: RepositoryEntry, target_p99_ms: float, *, verify_seconds: float = 2.0) -> SloPlan:
    """Measure the curve of ``entry``'s model, choose the knobs and check them under load."""
    if not target_p99_ms > 0:
        raise OptionError(f"--slo-p99-ms must be a positive number of milliseconds, got {target_p99_ms}")
    model = entry.load()
    runner = ModelRunner(
        model, entry.name, entry.version, instances=entry.instances, max_batch_size=LARGEST_BATCH
    )
    budget = HEADROOM * target_p99_ms
    curve = measure_curve(runner, stop_above_ms=budget / 2)
    candidates = feasible(curve, budget)
    if not candidates:
        single = curve[0]
        raise OptionError(
            f"--slo-p99-ms {target_p99_ms:g} cannot be met for {entry.name}: one sample takes "
            f"p99 {single.p99_ms:.2f} ms here with {entry.instances} instance(s), and a request may "
            f"wait for a running batch, so the target must be at least "
            f"{2 * single.p99_ms / HEADROOM:.1f} ms (or use a faster artifact, e.g. hone quantize)"
        )
    result: SloPlan | None = None
    feeds = sample_feeds(model, batch=1)
    for _attempt in range(min(VERIFY_ATTEMPTS, len(candidates))):
        point = best(candidates)
        delay = min(max(budget - 2 * point.p99_ms, 0.0), point.p50_ms)
        result = SloPlan(
            model=entry.name,
            version=entry.version,
            target_p99_ms=target_p99_ms,
            instances=entry.instances,
            curve=curve,
            max_batch_size=point.batch,
            max_queue_delay_ms=round(delay, 2),
            predicted_p99_ms=2 * point.p99_ms + delay,
            checks=result.checks if result else [],
        )
        config = result.batch_config(entry.batch)
        serving = ModelRunner(
            model, entry.name, entry.version, instances=entry.instances, max_batch_size=point.batch
        )
        serving.warm_up()
        clients = entry.instances * point.batch
        result.checks.append(asyncio.run(run_level(serving, config, feeds, clients, verify_seconds)))
        if result.met:
            break
        candidates = [c for c in candidates if c.batch < point.batch]
        if not candidates:
            break
    assert result is not None
    return result


def measure_curve(
    runner: ModelRunner, *, stop_above_ms: float, largest: int = LARGEST_BATCH
) -> list[BatchPoint]:
    """Batch sizes 1, 2, 4, ... with every instance running at once, until p99 passes the bound."""
    curve: list[BatchPoint] = []
    batch = 1
    while batch <= largest:
        feeds = sample_feeds(runner.model, batch=batch)
        runner.run(feeds)  # first run at this shape: onnxruntime settles its buffers
        with ThreadPoolExecutor(runner.instances) as pool:
            timings = [pool.submit(_time_runs, runner, feeds) for _ in range(runner.instances)]
            times_ms = np.concatenate([np.asarray(t.result()) for t in timings])
        p50, p99 = (float(v) for v in np.percentile(times_ms, [50, 99]))
        curve.append(BatchPoint(batch, p50, p99, int(times_ms.size), runner.instances * batch / (p50 / 1000)))
        if p99 > stop_above_ms:
            break
        batch *= 2
    return curve


def feasible(curve: list[BatchPoint], budget_ms: float) -> list[BatchPoint]:
    """The batch sizes whose worst case (wait for one batch, run in the next) fits the budget."""
    return [point for point in curve if 2 * point.p99_ms <= budget_ms]


def best(candidates: list[BatchPoint]) -> BatchPoint:
    """The highest throughput; a smaller batch when it is within THROUGHPUT_MARGIN of it."""
    top = max(point.samples_per_s for point in candidates)
    return min(
        (point for point in candidates if point.samples_per_s * THROUGHPUT_MARGIN >= top),
        key=lambda point: point.batch,
    )


def _time_runs(runner: ModelRunner, feeds: dict[str, np.ndarray]) -> list[float]:
    times_ms: list[float] = []
    deadline = time.perf_counter() + SECONDS_PER_SIZE
    while len(times_ms) < MIN_RUNS_PER_SIZE or (
        time.perf_counter() < deadline and len(times_ms) < MAX_RUNS_PER_SIZE
    ):
        began = time.perf_counter()
        runner.run(feeds)
        times_ms.append((time.perf_counter() - began) * 1000)
    return times_ms
