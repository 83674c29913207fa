"""A bounded closed-loop load test of a model behind the Batcher, in-process (no HTTP).

``load_test(model)`` serves the model with the batcher's default knobs and, for each concurrency,
keeps that many clients each sending one single-sample request after the previous one was answered,
for ``seconds_per_level``. It measures what the batcher and the sessions add (what ``hone serve``
adds beyond them is HTTP parsing); results are plain dataclasses (JSON) for the run report.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import numpy as np

from hone.data import feeds as sample_feeds
from hone.model import Model
from hone.serve.batcher import Batcher
from hone.serve.config import BatchConfig
from hone.serve.model_runner import ModelRunner
from hone.serve.types import LoadLevel, LoadTestResult

logger = logging.getLogger(__name__)


def load_test(
    model: Model,
    *,
    artifact: str,
    concurrencies: Sequence[int] = (1, 8),
    seconds_per_level: float = 2.0,
    threads: int | None = None,
    config: BatchConfig | None = None,
    provider: str = "cpu",
) -> LoadTestResult:
    """Closed-loop load at each concurrency for ``seconds_per_level`` (a fresh batcher per level)."""
    if seconds_per_level <= 0:
        raise ValueError(f"seconds_per_level must be positive, got {seconds_per_level}")
    if not concurrencies or any(c < 1 for c in concurrencies):
        raise ValueError(f"concurrencies must be at least 1 each, got {list(concurrencies)}")
    config = config or BatchConfig()
    runner = ModelRunner(
        model, artifact, max_batch_size=config.max_batch_size, threads=threads, provider=provider
    )
    runner.warm_up()
    feeds = sample_feeds(model, batch=1)
    result = LoadTestResult(artifact, config.max_batch_size, config.max_queue_delay_ms)
    for concurrency in concurrencies:
        result.levels.append(asyncio.run(run_level(runner, config, feeds, concurrency, seconds_per_level)))
    return result


async def run_level(
    runner: ModelRunner, config: BatchConfig, feeds: dict[str, np.ndarray], concurrency: int, seconds: float
) -> LoadLevel:
    """``concurrency`` closed-loop clients sending ``feeds`` through a fresh batcher for ``seconds``."""
    batcher = Batcher(runner, config)
    await batcher.start()
    latencies_ns: list[int] = []
    failures = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal failures
        while time.perf_counter() < deadline:
            began = time.perf_counter_ns()
            try:
                await batcher.submit(feeds)
            except Exception as exc:  # noqa: BLE001 - a failed request is counted, the load goes on
                failures += 1
                logger.debug("load test request failed: %s", exc)
                continue
            latencies_ns.append(time.perf_counter_ns() - began)

    began = time.perf_counter()
    try:
        await asyncio.gather(*(client() for _ in range(concurrency)))
    finally:
        await batcher.stop()
    elapsed = time.perf_counter() - began
    latencies_ms = np.array(latencies_ns, dtype=np.float64) / 1e6
    has = latencies_ms.size > 0
    return LoadLevel(
        concurrency=concurrency,
        requests=int(latencies_ms.size),
        failures=failures,
        seconds=elapsed,
        p50_ms=float(np.percentile(latencies_ms, 50)) if has else float("nan"),
        p99_ms=float(np.percentile(latencies_ms, 99)) if has else float("nan"),
        throughput_per_s=latencies_ms.size / elapsed if elapsed > 0 else 0.0,
        batch_sizes=dict(sorted(batcher.stats.batch_sizes.items())),
    )
