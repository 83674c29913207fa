"""SLO mode: the choice rule on made-up curves, and a whole plan (measure, choose, check) on a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_models import RECORDER_TEXT, save_model

from hone.errors import OptionError
from hone.serve import slo
from hone.serve.config import resolve_models
from hone.serve.server import ServeOptions


def point(batch: int, p50_ms: float, p99_ms: float) -> slo.BatchPoint:
    return slo.BatchPoint(batch, p50_ms, p99_ms, runs=50, samples_per_s=batch / (p50_ms / 1000))


CURVE = [point(1, 1.0, 1.5), point(2, 1.2, 1.8), point(4, 1.6, 2.5), point(8, 3.0, 4.0), point(16, 6.4, 9.0)]


def test_only_batches_whose_worst_case_fits_the_budget_are_feasible() -> None:
    # Worst case: wait for a running batch, then run in the next one: 2 x p99.
    assert [p.batch for p in slo.feasible(CURVE, budget_ms=8.0)] == [1, 2, 4, 8]
    assert [p.batch for p in slo.feasible(CURVE, budget_ms=3.0)] == [1]
    assert slo.feasible(CURVE, budget_ms=2.9) == []


def test_the_best_batch_has_the_highest_throughput_and_a_smaller_one_wins_a_near_tie() -> None:
    assert slo.best(slo.feasible(CURVE, 8.0)).batch == 8  # 2667 samples/s, above batch 4's 2500
    near_tie = [point(4, 1.6, 2.0), point(8, 3.1, 4.0)]  # 2500 vs 2581 samples/s: within 5%
    assert slo.best(near_tie).batch == 4


def test_a_plan_measures_chooses_and_checks_under_load(tmp_path: Path) -> None:
    entry = resolve_models(save_model(RECORDER_TEXT, tmp_path / "recorder.onnx"))[0]
    plan = slo.plan(entry, 250.0, verify_seconds=0.5)
    sizes = [p.batch for p in plan.curve]
    assert sizes[:3] == [1, 2, 4] and all(p.p50_ms > 0 and p.p99_ms >= p.p50_ms for p in plan.curve)
    assert plan.max_batch_size in sizes
    chosen = next(p for p in plan.curve if p.batch == plan.max_batch_size)
    assert 2 * chosen.p99_ms <= slo.HEADROOM * 250.0
    assert 0 <= plan.max_queue_delay_ms <= chosen.p50_ms + 0.01
    check = plan.checks[-1]
    assert check.concurrency == plan.max_batch_size and check.requests > 0 and check.failures == 0
    assert plan.met == (check.p99_ms <= 250.0)
    config = plan.batch_config(entry.batch)
    assert (config.max_batch_size, config.max_queue_delay_ms) == (plan.max_batch_size, plan.max_queue_delay_ms)
    assert plan.line().startswith(f"hone serve: slo: recorder v1 p99 <= 250 ms {'met' if plan.met else 'MISSED'}")


def test_a_target_below_one_sample_is_refused_with_the_least_feasible_target(tmp_path: Path) -> None:
    entry = resolve_models(save_model(RECORDER_TEXT, tmp_path / "recorder.onnx"))[0]
    with pytest.raises(OptionError, match=r"cannot be met for recorder: one sample takes p99 .* at least"):
        slo.plan(entry, 0.0001)


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"slo_p99_ms": -1.0}, "must be a positive number"),
        ({"slo_p99_ms": 20.0, "max_batch_size": 8}, "give the target or the knobs, not both"),
        ({"slo_p99_ms": 20.0, "max_queue_delay_ms": 1.0}, "give the target or the knobs, not both"),
    ],
)
def test_slo_options_that_contradict_are_refused(knobs: dict, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        ServeOptions(model="resnet18", **knobs)
