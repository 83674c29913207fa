"""The simulator: exact on balanced pipelines, links and shared cores modelled, planning at scale."""

from __future__ import annotations

import pytest

from hone.errors import OptionError
from hone.pipeline.simulate import StageCost, fewest_microbatches, simulate
from hone.pipeline.types import Link

FAST_LINK = Link(bandwidth_gbps=1e6, latency_ms=0.0)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize("mode", ["inference", "train"])
@pytest.mark.parametrize(("stages", "microbatches"), [(2, 8), (4, 8), (4, 16), (8, 3)])
def test_a_balanced_pipeline_matches_the_formula(schedule: str, mode: str, stages: int, microbatches: int) -> None:
    forward, backward = 10.0, 20.0 if mode == "train" else 0.0
    result = simulate([StageCost(forward, backward)] * stages, schedule=schedule, mode=mode,
                      microbatches=microbatches, link=FAST_LINK)
    assert result.step_ms == pytest.approx((microbatches + stages - 1) * (forward + backward))
    assert result.bubble == pytest.approx((stages - 1) / (microbatches + stages - 1))
    assert result.bubble == pytest.approx(result.bubble_formula)


def test_one_f_one_b_bounds_in_flight_micro_batches_and_gpipe_does_not() -> None:
    costs = [StageCost(1.0, 2.0)] * 4
    one = simulate(costs, schedule="1f1b", mode="train", microbatches=32, link=FAST_LINK)
    gpipe = simulate(costs, schedule="gpipe", mode="train", microbatches=32, link=FAST_LINK)
    assert [s.peak_in_flight for s in one.per_stage] == [4, 3, 2, 1]
    assert [s.peak_in_flight for s in gpipe.per_stage] == [32] * 4
    assert one.step_ms == pytest.approx(gpipe.step_ms)


def test_a_message_costs_latency_plus_size_over_bandwidth() -> None:
    link = Link(bandwidth_gbps=1.0, latency_ms=0.5)  # 1 MB takes 1 ms on the wire
    result = simulate([StageCost(10.0, 0.0, 1_000_000), StageCost(10.0)], schedule="gpipe",
                      mode="inference", microbatches=1, link=link, keep_events=True)
    assert result.step_ms == pytest.approx(10.0 + 1.0 + 0.5 + 10.0)
    second = [e for e in result.events if e.rank == 1]
    assert second[0].start_ms == pytest.approx(11.5)


def test_messages_queue_on_a_slow_link_so_communication_paces_the_step() -> None:
    link = Link(bandwidth_gbps=0.1, latency_ms=0.0)  # 1 MB takes 10 ms, compute takes 1 ms
    result = simulate([StageCost(1.0, 0.0, 1_000_000), StageCost(1.0)], schedule="gpipe",
                      mode="inference", microbatches=8, link=link)
    assert result.step_ms == pytest.approx(1.0 + 8 * 10.0 + 1.0)
    assert result.bubble > 0.9


def test_interleaving_divides_the_bubble_by_the_chunks() -> None:
    stages, microbatches, chunks = 4, 8, 2
    result = simulate([StageCost(5.0, 10.0)] * (stages * chunks), schedule="interleaved", mode="train",
                      microbatches=microbatches, chunks=chunks, link=FAST_LINK)
    assert result.bubble == pytest.approx((stages - 1) / (chunks * microbatches + stages - 1))
    plain = simulate([StageCost(10.0, 20.0)] * stages, schedule="1f1b", mode="train",
                     microbatches=microbatches, link=FAST_LINK)
    assert result.step_ms < plain.step_ms


def test_ranks_sharing_one_core_take_the_total_work() -> None:
    result = simulate([StageCost(100.0)] * 2, schedule="gpipe", mode="inference", microbatches=2,
                      link=FAST_LINK, cores=1)
    assert result.step_ms == pytest.approx(400.0)  # 4 forwards of 100 ms, one core
    dedicated = simulate([StageCost(100.0)] * 2, schedule="gpipe", mode="inference", microbatches=2,
                         link=FAST_LINK)
    assert dedicated.step_ms == pytest.approx(300.0)


def test_it_plans_64_stages_and_1024_micro_batches() -> None:
    result = simulate([StageCost(1.0, 2.0, 1000)] * 64, schedule="1f1b", mode="train", microbatches=1024,
                      link=FAST_LINK)
    assert result.bubble == pytest.approx(63 / (1024 + 63))
    # Every hop's latency adds to the fill and the drain: 10 us per hop on 1 ms stages shows.
    slower = simulate([StageCost(1.0, 2.0, 1000)] * 64, schedule="1f1b", mode="train", microbatches=1024,
                      link=Link(25.0, 0.01))
    assert slower.bubble > result.bubble
    assert max(s.peak_in_flight for s in result.per_stage) == 64


def test_fewest_microbatches_finds_the_smallest_m_under_the_bubble() -> None:
    costs = [StageCost(10.0, 20.0)] * 16
    best = fewest_microbatches(costs, 0.05, link=FAST_LINK)
    assert best.bubble <= 0.05 + 1e-12
    assert best.microbatches == 285  # 15 / (M + 15) <= 0.05  <=>  M >= 285
    fewer = simulate(costs, schedule="1f1b", mode="train", microbatches=284, link=FAST_LINK)
    assert fewer.bubble > 0.05


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"costs": [StageCost(1.0)] * 65, "microbatches": 4}, "up to 64 stages"),
        ({"costs": [StageCost(1.0)] * 2, "microbatches": 1025}, "1024 micro-batches"),
        ({"costs": [StageCost(1.0)] * 2, "microbatches": 4, "cores": 0}, "cores must be at least 1"),
        ({"costs": [StageCost(1.0)] * 3, "microbatches": 4, "chunks": 2, "schedule": "interleaved"}, "evenly"),
    ],
)
def test_bad_simulations_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        simulate(kwargs.pop("costs"), link=FAST_LINK, **kwargs)


def test_a_slow_link_that_no_micro_batch_count_fixes_is_explained() -> None:
    costs = [StageCost(1.0, 0.0, 10_000_000)] * 2
    with pytest.raises(OptionError, match="slow link"):
        fewest_microbatches(costs, 0.05, mode="inference", link=Link(0.01, 0.0))


def test_the_cli_answers_how_many_micro_batches_keep_the_bubble_under_five_percent(cli) -> None:  # noqa: ANN001
    result = cli("pipeline", "simulate", "--stages", "16", "--max-bubble", "0.05", "--activation-mb", "0",
                 "--latency-ms", "0")
    assert result.exit_code == 0, result.stderr
    assert "285 micro-batches give a 5.00% bubble" in result.stdout
