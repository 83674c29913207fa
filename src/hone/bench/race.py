"""Alternating timing of several runners in one process, for ratios that machine noise hits alike.

``race`` warms every runner, then runs blocks of each in turn (A B C A B C ...) for ``rounds``
rounds of ``block_s`` seconds each, and returns every single-run time per runner. Compare the
medians of the pooled times: a burst of load from another process lands in one block of each
runner instead of in one runner's whole measurement, which is what makes two separate ``bench``
calls disagree on sub-millisecond models. Used by the quantize speed gate and the benchmarks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

WARMUP_RUNS = 3


def race(runners: dict[str, Callable[[], object]], *, rounds: int = 3, block_s: float = 1.0,
         on_round: Callable[[int, dict[str, list[float]]], None] | None = None) -> dict[str, list[float]]:
    """Milliseconds of every run of every runner, blocks alternating; ``on_round(index, timings)`` after each round."""
    if rounds < 1 or block_s <= 0:
        raise ValueError(f"race needs rounds >= 1 and block_s > 0, got rounds={rounds}, block_s={block_s}")
    for run in runners.values():
        for _ in range(WARMUP_RUNS):
            run()
    timings: dict[str, list[float]] = {label: [] for label in runners}
    for index in range(rounds):
        for label, run in runners.items():
            began = time.perf_counter()
            while True:
                start = time.perf_counter()
                run()
                timings[label].append((time.perf_counter() - start) * 1000.0)
                if start - began >= block_s:
                    break
        if on_round is not None:
            on_round(index, timings)
    return timings
