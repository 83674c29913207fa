"""Interleaved comparisons: every ratio from one race, with its spread round by round."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

import hone
from conftest import SMALL_MLP_TEXT
from hone.bench import Contender, bench, compare
from hone.bench.race import race
from hone.errors import OptionError

# The same MLP with its MatMul done 40 times over: measurably slower than the plain one.
_SLOW_MLP_TEXT = SMALL_MLP_TEXT.replace(
    "    h = MatMul(x, w1)\n",
    "    h0 = MatMul(x, w1)\n"
    + "".join(f"    t{i} = Mul(h{i}, h{i})\n    h{i + 1} = Sqrt(t{i})\n" for i in range(40))
    + "    h = Identity(h40)\n",
)


@pytest.fixture
def fast_and_slow(tmp_path: Path) -> tuple[hone.Model, hone.Model]:
    slow = tmp_path / "slow.onnx"
    onnx.save(onnx.parser.parse_model(_SLOW_MLP_TEXT), slow)
    fast = tmp_path / "fast.onnx"
    onnx.save(onnx.parser.parse_model(SMALL_MLP_TEXT), fast)
    return hone.load(fast), hone.load(slow)


def test_every_speedup_and_its_rounds_come_from_one_race_against_the_named_baseline(fast_and_slow) -> None:
    fast, slow = fast_and_slow
    result = compare([Contender("slow", slow, "ort-disabled"), Contender("fast", fast, "ort-disabled")],
                     baseline="slow", baseline_description="the slow model, optimizations off",
                     batches=[1, 2], threads=1, budget_s=0.3, rounds=3)
    assert result.baseline == "the slow model, optimizations off" and result.method == "interleaved"
    assert [(c.variant, c.batch) for c in result.configs] == [("slow", 1), ("slow", 2), ("fast", 1), ("fast", 2)]
    for config in result.configs:
        base = result.config("slow", config.batch)
        assert config.baseline_variant == "slow"
        assert config.speedup_vs_baseline == pytest.approx(base.p50_ms / config.p50_ms)
        assert len(config.round_p50_ms) == len(base.round_p50_ms) >= 1
        assert config.speedup_per_round == pytest.approx(
            [b / r for b, r in zip(base.round_p50_ms, config.round_p50_ms)])
        assert 0 < config.p50_ms <= config.p90_ms <= config.p99_ms and config.runs >= len(config.round_p50_ms)
    assert result.config("slow", 1).speedup_vs_baseline == 1.0
    assert result.config("fast", 1).speedup_vs_baseline > 1.0  # 81 nodes against 3


def test_without_a_baseline_no_speedup_is_claimed(mlp_path: Path) -> None:
    model = hone.load(mlp_path)
    result = compare([Contender("a", model)], baseline=None, batches=[1], threads=1, budget_s=0.1)
    assert result.baseline is None
    assert result.configs[0].speedup_vs_baseline is None and result.configs[0].speedup_per_round == []


@pytest.mark.parametrize(("labels", "baseline", "message"), [
    (["a", "a"], "a", "unique"),
    (["a", "b"], "c", "not one of the contenders"),
    ([], None, "at least one"),
])
def test_contenders_and_the_baseline_are_checked_before_any_session(mlp_path: Path, labels, baseline, message) -> None:
    model = hone.load(mlp_path)
    with pytest.raises(OptionError, match=message):
        compare([Contender(label, model) for label in labels], baseline=baseline)


def test_a_variant_that_does_not_apply_is_refused(mlp_path: Path) -> None:
    with pytest.raises(OptionError, match="does not apply"):
        compare([Contender("eager", hone.load(mlp_path), "torch-eager")], baseline=None)


def test_bench_races_its_variants_and_keeps_its_fields(mlp_path: Path) -> None:
    result = bench(hone.load(mlp_path), batches=[1], threads=1, budget_s=0.2)
    assert result.method == "interleaved" and result.baseline == "ort-disabled on mlp"
    disabled, enabled = result.configs
    assert (disabled.variant, enabled.variant) == ("ort-disabled", "ort-all")
    assert len(enabled.speedup_per_round) == len(enabled.round_p50_ms) == len(disabled.round_p50_ms)


def test_the_race_alternates_blocks_and_stops_when_asked() -> None:
    order: list[str] = []
    runners = {name: (lambda name=name: order.append(name)) for name in ("a", "b")}
    rounds_seen: list[int] = []
    timings = race(runners, rounds=5, block_s=10.0, warmup_runs=0, max_block_runs=2,
                   on_round=lambda index, _: rounds_seen.append(index), until=lambda index, _: index == 1)
    assert rounds_seen == [0, 1]
    assert order == ["a", "a", "b", "b", "a", "a", "b", "b"]
    assert [len(timings["a"]), len(timings["b"])] == [4, 4]


def test_a_run_longer_than_its_block_is_the_whole_block() -> None:
    import time

    timings = race({"slow": lambda: time.sleep(0.02)}, rounds=3, block_s=0.001, warmup_runs=0)
    assert len(timings["slow"]) == 3 and min(timings["slow"]) >= 20
