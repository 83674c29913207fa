"""Partitioning: the slowest stage is as fast as any contiguous split allows, links count, errors."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from torch import nn

from hone.errors import OptionError
from hone.pipeline.blocks import BlockCost, measure_block_costs, torch_blocks
from hone.pipeline.partition import measure_loopback_link, partition
from hone.pipeline.types import Link
from hone.zoo.transformer import build_stack

FREE_LINK = Link(bandwidth_gbps=1e9, latency_ms=0.0)


def costs_of(times: list[float], output_bytes: int = 0) -> list[BlockCost]:
    return [BlockCost(f"b{i}", t, 2 * t, 10 * (i + 1), output_bytes, (1,), "float32") for i, t in enumerate(times)]


def brute_force_slowest(times: list[float], stages: int, train: bool) -> float:
    weight = 3 if train else 1
    best = float("inf")
    for cuts in itertools.combinations(range(1, len(times)), stages - 1):
        bounds = (0, *cuts, len(times))
        best = min(best, max(weight * sum(times[a:b]) for a, b in itertools.pairwise(bounds)))
    return best


@pytest.mark.parametrize("seed", range(20))
def test_the_slowest_stage_is_the_best_any_contiguous_split_achieves(seed: int) -> None:
    rng = random.Random(seed)
    times = [rng.uniform(1, 50) for _ in range(rng.randint(2, 9))]
    stages = rng.randint(1, len(times))
    train = bool(seed % 2)
    plan = partition(costs_of(times), stages, link=FREE_LINK, train=train)
    assert plan.slowest_stage_ms == pytest.approx(brute_force_slowest(times, stages, train))
    # Contiguous, in order, covering every block once.
    assert [s.first_block for s in plan.stages] == [0] + [s.last_block + 1 for s in plan.stages[:-1]]
    assert plan.stages[-1].last_block == len(times) - 1
    assert sum(s.params for s in plan.stages) == sum(10 * (i + 1) for i in range(len(times)))


def test_an_even_chain_splits_evenly() -> None:
    plan = partition(costs_of([10.0] * 8), 4, link=FREE_LINK, train=False)
    assert [s.blocks for s in plan.stages] == [["b0", "b1"], ["b2", "b3"], ["b4", "b5"], ["b6", "b7"]]
    assert plan.imbalance == pytest.approx(1.0)


def test_a_slow_link_moves_the_cut_away_from_a_big_activation() -> None:
    costs = costs_of([10.0, 10.0, 10.0, 10.0])
    costs[1] = BlockCost("b1", 10.0, 20.0, 20, 50_000_000, (1,), "float32")  # 50 MB out of b1
    link = Link(bandwidth_gbps=1.0, latency_ms=0.0)  # 50 ms to send it
    plan = partition(costs, 2, link=link, train=False)
    assert plan.stages[0].last_block != 1
    assert partition(costs, 2, link=FREE_LINK, train=False).stages[0].last_block == 1


def test_more_stages_than_blocks_is_refused_with_the_block_count() -> None:
    with pytest.raises(OptionError, match=r"--stages 5 is more than the 3 blocks .*use --stages 3 or fewer"):
        partition(costs_of([1.0, 2.0, 3.0]), 5, link=FREE_LINK, train=False)


def test_torch_blocks_open_nested_sequentials_and_chain_to_the_same_output() -> None:
    module = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), nn.Linear(4, 2)))
    blocks = torch_blocks(module)
    assert [name for name, _ in blocks] == ["0", "1.0", "1.1"]
    x = torch.randn(3, 4)
    chained = x
    for _, block in blocks:
        chained = block(chained)
    torch.testing.assert_close(chained, module(x), rtol=0, atol=0)


def test_resnet_blocks_are_stem_residual_blocks_and_head_and_chain_exactly() -> None:
    from hone.zoo.resnet import ResNet, BasicBlock

    torch.manual_seed(0)
    module = ResNet(BasicBlock, (2, 2, 2, 2)).eval()
    blocks = torch_blocks(module)
    assert [name for name, _ in blocks][:3] == ["stem", "layer1.0", "layer1.1"]
    assert [name for name, _ in blocks][-1] == "head" and len(blocks) == 10
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        chained = x
        for _, block in blocks:
            chained = block(chained)
        torch.testing.assert_close(chained, module(x), rtol=0, atol=0)


def test_a_module_that_is_not_a_chain_is_refused_with_what_to_do() -> None:
    with pytest.raises(OptionError, match="nn.Sequential nor has pipeline_blocks"):
        torch_blocks(nn.Linear(2, 2))


def test_measured_block_costs_carry_times_parameters_and_activation_sizes() -> None:
    stack = build_stack(layers=2, width=32, heads=2)
    costs = measure_block_costs(torch_blocks(stack), torch.randn(2, 16, 32), train=True, threads=1, runs=2)
    assert [c.name for c in costs] == ["0", "1"]
    assert all(c.forward_ms > 0 and c.backward_ms > 0 for c in costs)
    assert costs[0].output_bytes == 2 * 16 * 32 * 4 and costs[0].output_shape == (2, 16, 32)
    assert costs[0].params == sum(p.numel() for p in stack[0].parameters())
    inference = measure_block_costs(torch_blocks(stack), torch.randn(2, 16, 32), train=False, threads=1, runs=2)
    assert all(c.backward_ms == 0.0 for c in inference)


def test_the_loopback_link_is_measured() -> None:
    link = measure_loopback_link(size_bytes=4 << 20, pings=10)
    assert link.bandwidth_gbps > 0.01
    assert 0 < link.latency_ms < 50
