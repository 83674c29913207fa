"""A torch module as a chain of blocks, and what each block costs, measured.

Blocks come from the module itself: ``module.pipeline_blocks()`` when it has one (the zoo's ResNets
list stem, residual blocks, head), else the children of an ``nn.Sequential`` (nested Sequentials
are opened, so a stack of stages becomes a stack of layers). Each block must take one tensor and
return one tensor: that tensor is what crosses a stage boundary.

Costs are timed, not estimated from parameter counts: each block runs on a real micro-batch (the
previous block's output) with the thread count a stage process will use, forward alone for
inference, forward with autograd plus backward for training; the median of ``runs`` after a
warm-up run is kept.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from hone.errors import ExecutionError, OptionError


@dataclass(frozen=True)
class BlockCost:
    """One block, per micro-batch: measured times, its parameters and the tensor it hands on."""

    name: str
    forward_ms: float
    backward_ms: float  # 0.0 for inference
    params: int
    output_bytes: int
    output_shape: tuple[int, ...]
    output_dtype: str


def torch_blocks(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The module's forward as named single-tensor blocks, in order."""
    listed = getattr(module, "pipeline_blocks", None)
    if callable(listed):
        blocks = list(listed())
    elif isinstance(module, nn.Sequential):
        blocks = list(_open_sequential("", module))
    else:
        raise OptionError(
            f"{type(module).__name__} is neither an nn.Sequential nor has pipeline_blocks(); return an "
            "nn.Sequential of blocks from the factory, or add pipeline_blocks() -> [(name, module), ...]"
        )
    if not blocks:
        raise OptionError(f"{type(module).__name__} has no blocks to split into stages")
    return blocks


def _open_sequential(prefix: str, sequential: nn.Sequential) -> Iterator[tuple[str, nn.Module]]:
    for name, child in sequential.named_children():
        full_name = f"{prefix}{name}"
        if isinstance(child, nn.Sequential):
            yield from _open_sequential(f"{full_name}.", child)
        else:
            yield full_name, child


def measure_block_costs(
    blocks: Sequence[tuple[str, nn.Module]],
    microbatch: torch.Tensor,
    *,
    train: bool,
    threads: int,
    runs: int = 3,
) -> list[BlockCost]:
    """Time every block on ``microbatch`` flowing through the chain, with ``threads`` torch threads."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        costs = []
        x = microbatch
        for name, block in blocks:
            block.train(train)
            forward_ms, backward_ms, output = _time_block(name, block, x, train=train, runs=runs)
            params = sum(p.numel() for p in block.parameters())
            costs.append(
                BlockCost(
                    name=name,
                    forward_ms=forward_ms,
                    backward_ms=backward_ms,
                    params=params,
                    output_bytes=output.numel() * output.element_size(),
                    output_shape=tuple(output.shape),
                    output_dtype=str(output.dtype).removeprefix("torch."),
                )
            )
            x = output.detach()
        return costs
    finally:
        torch.set_num_threads(previous_threads)


def _time_block(
    name: str, block: nn.Module, x: torch.Tensor, *, train: bool, runs: int
) -> tuple[float, float, torch.Tensor]:
    forward_times, backward_times = [], []
    output = None
    for _ in range(runs + 1):  # the first run warms up and is dropped
        with torch.set_grad_enabled(train):
            inputs = x.detach().requires_grad_(train and x.is_floating_point())
            start = time.perf_counter()
            try:
                output = block(inputs)
            except Exception as exc:
                raise ExecutionError(
                    f"block {name!r} failed on a {tuple(x.shape)} input ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); check --input-shape and the blocks"
                ) from exc
            forward_times.append(time.perf_counter() - start)
            if not isinstance(output, torch.Tensor):
                raise OptionError(
                    f"block {name!r} returned {type(output).__name__}, not one tensor; hone pipeline "
                    "needs a single tensor between blocks"
                )
            if train:
                gradient = torch.ones_like(output)
                start = time.perf_counter()
                output.backward(gradient)
                backward_times.append(time.perf_counter() - start)
                block.zero_grad(set_to_none=True)
    assert output is not None
    forward_ms = 1000 * statistics.median(forward_times[1:])
    backward_ms = 1000 * statistics.median(backward_times[1:]) if train else 0.0
    return forward_ms, backward_ms, output
