"""How the tuner measures: the ``Measurer`` protocol and ``OrtMeasurer``, its onnxruntime form.

Three measurements, each a function of what is measured only (so the search can cache them):

- ``race``: several (model, session options) contenders at one batch, alternating blocks in one
  process (``hone.bench.race``, as every hone comparison), each one's p50 and per-round medians;
- ``curve``: one configuration's latency-vs-batch curve with every instance busy
  (``hone.serve.slo.measure_curve``, as ``hone serve --slo-p99-ms``);
- ``serve``: a closed-loop load at one concurrency through the real batcher
  (``hone.serve.loadtest.run_level``), single-sample requests, as ``hone serve`` would see them
  minus HTTP.

Tests inject a fake measurer with a fake clock; the search never times anything itself.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hone.bench.race import race
from hone.data import feeds as sample_feeds
from hone.model import Model
from hone.runtime import Session, SessionConfig
from hone.serve.config import BatchConfig
from hone.serve.loadtest import run_level
from hone.serve.model_runner import ModelRunner
from hone.serve.slo import BatchPoint, measure_curve
from hone.serve.types import LoadLevel
from hone.session_options import SessionOptions
from hone.tune.types import ServerSettings

RACE_ROUNDS = 3


@dataclass(frozen=True)
class Timing:
    """One contender of a race: the median of its pooled runs and of each round's block."""

    p50_ms: float
    round_p50_ms: tuple[float, ...]
    runs: int
    p99_ms: float


class Measurer(Protocol):
    def race(
        self, contenders: Mapping[str, tuple[Model, SessionOptions]], *, batch: int, seconds: float
    ) -> dict[str, Timing]: ...

    def curve(
        self, model: Model, options: SessionOptions, *, instances: int, stop_above_ms: float, largest: int
    ) -> list[BatchPoint]: ...

    def serve(
        self,
        model: Model,
        options: SessionOptions,
        server: ServerSettings,
        *,
        concurrency: int,
        seconds: float,
    ) -> LoadLevel: ...


class OrtMeasurer:
    """The measurer on this machine: onnxruntime sessions and hone's batcher, in this process.

    The last ``KEPT_RUNNERS`` model runners (sessions built and warmed up) are kept, so a
    configuration measured at several concurrencies, or in the alternating rounds of the
    confirmation, is built once, while a long search holds a bounded number of sessions (each
    holds its weights and arena: a grid of hundreds of points kept them all and ran out of memory).
    A runner is warmed up at batch 1 and the powers of two up to its max batch (``hone serve``
    warms every size; here that would cost more than most points measure).
    """

    KEPT_RUNNERS = 3

    def __init__(self, provider: str = "cpu") -> None:
        self.provider = provider
        self._runners: OrderedDict[tuple[int, SessionOptions, int, int], ModelRunner] = OrderedDict()

    def race(
        self, contenders: Mapping[str, tuple[Model, SessionOptions]], *, batch: int, seconds: float
    ) -> dict[str, Timing]:
        runners = {}
        for label, (model, options) in contenders.items():
            session = Session(model, SessionConfig.from_options(options, provider=self.provider))
            feeds = sample_feeds(model, batch=batch)
            runners[label] = _bound_run(session, feeds)
        block_s = seconds / (RACE_ROUNDS * max(1, len(runners)))
        ends: dict[str, list[int]] = {label: [] for label in runners}

        def mark(_: int, timings: dict[str, list[float]]) -> None:
            for label, times in timings.items():
                ends[label].append(len(times))

        timings = race(runners, rounds=RACE_ROUNDS, block_s=block_s, warmup_runs=2, on_round=mark)
        result = {}
        for label, times in timings.items():
            starts = [0, *ends[label][:-1]]
            blocks = [times[a:b] for a, b in zip(starts, ends[label], strict=True) if b > a]
            result[label] = Timing(
                statistics.median(times),
                tuple(statistics.median(b) for b in blocks),
                len(times),
                float(np.percentile(times, 99)),
            )
        return result

    def curve(
        self, model: Model, options: SessionOptions, *, instances: int, stop_above_ms: float, largest: int
    ) -> list[BatchPoint]:
        runner = self._runner(model, options, instances, largest)
        return measure_curve(runner, stop_above_ms=stop_above_ms, largest=largest)

    def serve(
        self,
        model: Model,
        options: SessionOptions,
        server: ServerSettings,
        *,
        concurrency: int,
        seconds: float,
    ) -> LoadLevel:
        runner = self._runner(model, options, server.instances, server.max_batch_size)
        config = BatchConfig(
            max_batch_size=server.max_batch_size,
            max_queue_delay_ms=server.max_queue_delay_ms,
            preferred_batch_sizes=server.preferred_batch_sizes,
        )
        feeds = sample_feeds(model, batch=1)
        return asyncio.run(run_level(runner, config, feeds, concurrency, seconds))

    def _runner(self, model: Model, options: SessionOptions, instances: int, max_batch: int) -> ModelRunner:
        key = (id(model), options, instances, max_batch)
        runner = self._runners.get(key)
        if runner is not None:
            self._runners.move_to_end(key)
        else:
            while len(self._runners) >= self.KEPT_RUNNERS:
                self._runners.popitem(last=False)
            runner = ModelRunner(
                model,
                model.name,
                instances=instances,
                max_batch_size=max_batch,
                session=options,
                provider=self.provider,
            )
            runner.warm_up(_warm_up_sizes(max_batch))
            self._runners[key] = runner
        return runner

    def close(self) -> None:
        self._runners.clear()


def _warm_up_sizes(max_batch: int) -> list[int]:
    """Batch 1, the powers of two below ``max_batch``, and ``max_batch``."""
    largest = max(1, max_batch)
    return sorted({1 << i for i in range(largest.bit_length()) if 1 << i <= largest} | {largest})


def _bound_run(session: Session, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
    def run() -> object:
        return session.run(feeds)

    return run
