"""The speed gate: of the candidates that passed the accuracy gate, keep the fastest, and only if it is
measurably faster than the float model on the target (or, with ``prefer="size"``, the smallest).

The float model and every passing candidate run at batch 1 under onnxruntime ORT_ENABLE_ALL on the
target's threads, in one interleaved race (``hone.bench.compare``: blocks alternating, every model
once per round, ``SPEED_ROUNDS`` rounds), so a burst of load hits all of them alike. A candidate is
kept for speed only when its pooled median beats float by ``MIN_SPEEDUP`` and it is faster in every
round: INT8 is not always faster (QDQ on CPUs without VNNI, tiny models dominated by overhead).
"""

from __future__ import annotations

from collections.abc import Sequence

from hone.model import Model
from hone.quantize.candidates import Judged
from hone.quantize.types import Candidate, Prefer, QuantizeResult

# A candidate must beat the float model by this factor to be kept for speed: on this shared machine
# two timings of the same model differ by up to a few percent, so a smaller gain is not a gain.
MIN_SPEEDUP = 1.05
SPEED_ROUNDS = 3  # alternating rounds of the speed gate; a candidate must be faster in each
_FLOAT_LABEL = "float"  # the float model's contender in the race (candidate names say their mode)


def keep_fastest(
    passing: Sequence[Judged],
    original: Model,
    result: QuantizeResult,
    threads: int | None,
    measure_speed: bool,
    budget_s: float,
    prefer: Prefer = "speed",
) -> tuple[Candidate | None, Model]:
    """The kept candidate and its model, or None and ``original`` when float is kept; each passing
    candidate's speed, and the float model's, go into the candidates and ``result``."""
    if not measure_speed:
        candidate, model = min(passing, key=lambda cm: cm[0].size_bytes)
        result.notes.append("speed not measured (asked not to): kept the smallest passing candidate")
        return candidate, model
    _race(passing, original, result, threads, budget_s)
    if prefer == "size":
        smallest, model = min(passing, key=lambda cm: (cm[0].size_bytes, cm[0].p50_ms))
        result.notes.append(
            f"kept the smallest passing candidate ({smallest.name}, {smallest.size_bytes:,} bytes, "
            f"{smallest.speedup:.2f}x the float model's speed)"
        )
        return smallest, model
    best_candidate, best_model = min(passing, key=lambda cm: cm[0].p50_ms or float("inf"))
    assert best_candidate.speedup is not None
    if best_candidate.speedup < MIN_SPEEDUP or not best_candidate.faster_every_round:
        every_round = "" if best_candidate.faster_every_round else ", not faster in every round"
        result.notes.append(
            "no candidate that passes the gate is measurably faster than float here (best"
            f" {best_candidate.name}:"
            f" {best_candidate.speedup:.2f}x{every_round};"
            f" faster means at least {MIN_SPEEDUP:.2f}x and in each of {SPEED_ROUNDS} rounds); the float"
            " model is kept"
        )
        return None, original
    return best_candidate, best_model


def _race(
    passing: Sequence[Judged], original: Model, result: QuantizeResult, threads: int | None, budget_s: float
) -> None:
    """Race float and every passing candidate; set their p50s, speedups and per-round verdicts."""
    from hone.bench.compare import Contender, compare

    contenders = [Contender(_FLOAT_LABEL, original), *(Contender(c.name, m) for c, m in passing)]
    race = compare(
        contenders,
        baseline=_FLOAT_LABEL,
        batches=[1],
        threads=threads,
        budget_s=budget_s,
        rounds=SPEED_ROUNDS,
    )
    float_config = race.config(_FLOAT_LABEL, 1)
    assert float_config is not None
    result.float_p50_ms = float_config.p50_ms
    for candidate, _ in passing:
        config = race.config(candidate.name, 1)
        assert config is not None and config.speedup_vs_baseline is not None
        candidate.p50_ms = config.p50_ms
        candidate.speedup = config.speedup_vs_baseline
        candidate.faster_every_round = all(ratio > 1.0 for ratio in config.speedup_per_round)
