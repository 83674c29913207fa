"""Alternating timing of several runners in one process, for ratios that machine noise hits alike.

``race`` warms every runner, then runs blocks of each in turn (A B C A B C ...) for ``rounds``
rounds of ``block_s`` seconds each, and returns every single-run time per runner. Compare the
medians of the pooled times: a burst of load from another process lands in one block of each
runner instead of in one runner's whole measurement, which is what makes two separate ``bench``
calls disagree on sub-millisecond models. ``until(index, timings)`` may end the race after any
round (``hone.bench.compare`` stops once every median is stable). This is the engine of
``hone.bench.compare``, hone's one speed comparison (``hone bench``, ``hone run``, the quantize
speed gate and prune all go through it); the benchmarks call it directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import TypeVar

WARMUP_RUNS = 3

Label = TypeVar("Label", bound=Hashable)


def race(
    runners: dict[Label, Callable[[], object]],
    *,
    rounds: int = 3,
    block_s: float = 1.0,
    on_round: Callable[[int, dict[Label, list[float]]], None] | None = None,
    until: Callable[[int, dict[Label, list[float]]], bool] | None = None,
    warmup_runs: int = WARMUP_RUNS,
    max_block_runs: int | None = None,
) -> dict[Label, list[float]]:
    """Milliseconds of every run of every runner, blocks alternating.

    ``on_round(index, timings)`` is called after each round, then ``until(index, timings)``: true
    ends the race there. A block runs until ``block_s`` has passed (at least one run; a run
    longer than the block is its block), or for ``max_block_runs`` runs.
    """
    if rounds < 1 or block_s <= 0:
        raise ValueError(f"race needs rounds >= 1 and block_s > 0, got rounds={rounds}, block_s={block_s}")
    if warmup_runs < 0 or (max_block_runs is not None and max_block_runs < 1):
        raise ValueError(
            f"race needs warmup_runs >= 0 and max_block_runs >= 1, got {warmup_runs}, {max_block_runs}"
        )
    for run in runners.values():
        for _ in range(warmup_runs):
            run()
    timings: dict[Label, list[float]] = {label: [] for label in runners}
    for index in range(rounds):
        for label, run in runners.items():
            began = time.perf_counter()
            runs = 0
            while True:
                start = time.perf_counter()
                run()
                end = time.perf_counter()
                timings[label].append((end - start) * 1000.0)
                runs += 1
                if end - began >= block_s or (max_block_runs is not None and runs >= max_block_runs):
                    break
        if on_round is not None:
            on_round(index, timings)
        if until is not None and until(index, timings):
            break
    return timings
