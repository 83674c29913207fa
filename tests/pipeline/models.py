"""Small torch factories for the pipeline tests (loaded as file.py:factory in the stage processes)."""

from __future__ import annotations

import time

import torch
from torch import nn

from hone.zoo.transformer import build_stack


def tiny_stack() -> nn.Sequential:
    """4 transformer layers of width 32: input (batch, 16, 32)."""
    return build_stack(layers=4, width=32, heads=2, seed=1)


def random_chain() -> nn.Sequential:
    """Weights drawn from torch's global RNG, different in every process: the stages must get the
    parent's weights, not build their own."""
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4))


class _OnlyInStages(nn.Module):
    """A linear layer that misbehaves only inside a stage process (not while hone measures it)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 8)
        self.calls = 0

    def in_stage(self) -> bool:
        return torch.distributed.is_available() and torch.distributed.is_initialized()


class FailsOnThirdForward(_OnlyInStages):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_stage():
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("injected failure on the third micro-batch")
        return self.linear(x)


class HangsInStage(_OnlyInStages):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_stage():
            time.sleep(600)
        return self.linear(x)


def failing_chain() -> nn.Sequential:
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), FailsOnThirdForward())


def hanging_chain() -> nn.Sequential:
    return nn.Sequential(HangsInStage(), nn.ReLU(), nn.Linear(8, 8))


class NotAChain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def not_a_chain() -> nn.Module:
    return NotAChain()
