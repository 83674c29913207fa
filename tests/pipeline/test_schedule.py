"""Schedules as action lists: every micro-batch once per direction, 1F1B's memory bound, bad input."""

from __future__ import annotations

from collections import Counter

import pytest

from hone.errors import OptionError
from hone.pipeline import schedule as schedules


@pytest.mark.parametrize("name", ["gpipe", "1f1b"])
@pytest.mark.parametrize(("stages", "microbatches"), [(1, 1), (2, 8), (4, 3), (4, 16)])
def test_every_rank_runs_each_forward_and_backward_once(name: str, stages: int, microbatches: int) -> None:
    for order in schedules.build(name, "train", stages, microbatches):
        assert Counter((a.kind, a.microbatch) for a in order) == Counter(
            [("F", m) for m in range(microbatches)] + [("B", m) for m in range(microbatches)]
        )
        # A backward never comes before its own forward.
        seen = set()
        for action in order:
            if action.kind == "F":
                seen.add(action.microbatch)
            else:
                assert action.microbatch in seen


def test_one_f_one_b_holds_at_most_s_minus_rank_micro_batches_and_gpipe_holds_all() -> None:
    stages, microbatches = 4, 16
    one_f_one_b = schedules.build("1f1b", "train", stages, microbatches)
    gpipe = schedules.build("gpipe", "train", stages, microbatches)
    assert [schedules.peak_in_flight(o) for o in one_f_one_b] == [4, 3, 2, 1]
    assert [schedules.peak_in_flight(o) for o in gpipe] == [16] * 4


def test_one_f_one_b_on_rank_zero_of_two_warms_up_once_then_alternates() -> None:
    order = schedules.build("1f1b", "train", 2, 3)[0]
    assert [str(a) for a in order] == ["F0", "F1", "B0", "F2", "B1", "B2"]


def test_inference_keeps_only_the_forwards_in_order() -> None:
    for name in ("gpipe", "1f1b"):
        for order in schedules.build(name, "inference", 3, 5):
            assert [str(a) for a in order] == [f"F{m}" for m in range(5)]


def test_interleaved_runs_every_chunk_of_every_micro_batch_once() -> None:
    stages, microbatches, chunks = 4, 8, 3
    for order in schedules.build("interleaved", "train", stages, microbatches, chunks):
        assert Counter((a.kind, a.microbatch, a.chunk) for a in order) == Counter(
            [(k, m, c) for k in "FB" for m in range(microbatches) for c in range(chunks)]
        )


def test_bubble_formula_is_s_minus_one_over_m_plus_s_minus_one() -> None:
    assert schedules.bubble_formula(4, 8) == pytest.approx(3 / 11)
    assert schedules.bubble_formula(4, 8, chunks=2) == pytest.approx(3 / 19)
    assert schedules.bubble_formula(1, 8) == 0.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("pipedream", "train", 2, 4, 1), "not one of"),
        (("1f1b", "eval", 2, 4, 1), "--mode"),
        (("1f1b", "train", 0, 4, 1), "--stages must be at least 1"),
        (("1f1b", "train", 2, 0, 1), "--microbatches must be at least 1"),
        (("1f1b", "train", 2, 4, 2), "needs --schedule interleaved"),
        (("interleaved", "train", 4, 6, 2), "divisible by --stages"),
    ],
)
def test_bad_schedule_arguments_are_refused_with_the_contract(args: tuple, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        schedules.build(*args)
