"""Pipeline schedules as plain data: for each rank, the ordered list of actions it runs in one step.

An action is a forward (F) or backward (B) of one micro-batch on one model chunk. The runtime
(``hone.pipeline.worker``) executes these lists on torch.distributed and the simulator
(``hone.pipeline.simulate``) replays the very same lists with modelled costs, so a measured step
and a predicted step compare like for like.

    gpipe         all M forwards, then all M backwards (in micro-batch order). A stage holds the
                  activations of all M micro-batches at the turn: peak in flight = M.
    1f1b          rank r runs S-1-r warm-up forwards, then alternates one forward and one backward,
                  then drains the backwards. Peak in flight = S-r <= S, independent of M.
    interleaved   Megatron's interleaved 1F1B: each rank holds V chunks (virtual stages
                  r, r+S, ..., r+(V-1)S); warm-up (S-1-r)*2 + (V-1)*S forwards, then 1F1B. The
                  bubble shrinks by V at the cost of V times the messages. Needs M % S == 0.

In inference mode there is no backward: every schedule is the forward order above with its
backwards removed, so GPipe and 1F1B run the same actions (forward-only pipelining has no
activation memory to bound).

The bubble of a balanced pipeline with S stages and M micro-batches is (S-1)/(M+S-1) for GPipe and
1F1B alike (1F1B saves memory, not time); interleaving divides the S-1 by V.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hone.errors import OptionError
from hone.pipeline.types import MODES, SCHEDULES, Mode, Schedule

Kind = Literal["F", "B"]


@dataclass(frozen=True)
class Action:
    """Run the forward (``F``) or backward (``B``) of micro-batch ``microbatch`` on ``chunk``."""

    kind: Kind
    microbatch: int
    chunk: int = 0  # which of the rank's model chunks (only interleaved has more than one)

    def __str__(self) -> str:
        return f"{self.kind}{self.microbatch}" + (f".{self.chunk}" if self.chunk else "")


def bubble_formula(stages: int, microbatches: int, chunks: int = 1) -> float:
    """The idle fraction of a balanced pipeline: (S-1)/(V*M + S-1) for V chunks per rank."""
    return (stages - 1) / (chunks * microbatches + stages - 1)


def schedule_named(name: str) -> Schedule:
    """``name`` as a Schedule, or an OptionError that lists them."""
    for schedule in SCHEDULES:
        if name == schedule:
            return schedule
    raise OptionError(f"--schedule {name!r} is not one of {', '.join(SCHEDULES)}")


def mode_named(name: str) -> Mode:
    """``name`` as a Mode, or an OptionError that lists them."""
    for mode in MODES:
        if name == mode:
            return mode
    raise OptionError(f"--mode {name!r} is not one of {', '.join(MODES)}")


def check_schedule_args(schedule: str, mode: str, stages: int, microbatches: int, chunks: int = 1) -> None:
    """Raise an OptionError, with the contract in its message, for arguments no schedule accepts."""
    schedule_named(schedule)
    mode_named(mode)
    if stages < 1:
        raise OptionError(f"--stages must be at least 1, got {stages}")
    if microbatches < 1:
        raise OptionError(f"--microbatches must be at least 1, got {microbatches}")
    if chunks < 1:
        raise OptionError(f"--chunks must be at least 1, got {chunks}")
    if schedule != "interleaved" and chunks != 1:
        raise OptionError(
            f"--chunks {chunks} needs --schedule interleaved; {schedule} holds one chunk per rank"
        )
    if schedule == "interleaved" and microbatches % stages:
        raise OptionError(
            f"interleaved 1F1B needs --microbatches divisible by --stages; {microbatches} is not a "
            f"multiple of {stages}"
        )


def build(schedule: str, mode: str, stages: int, microbatches: int, chunks: int = 1) -> list[list[Action]]:
    """The action list of every rank (index = rank) for one step."""
    check_schedule_args(schedule, mode, stages, microbatches, chunks)
    if schedule == "interleaved":
        orders = [_interleaved(rank, stages, microbatches, chunks) for rank in range(stages)]
    elif schedule == "1f1b":
        orders = [_one_f_one_b(rank, stages, microbatches) for rank in range(stages)]
    else:
        forwards = [Action("F", m) for m in range(microbatches)]
        backwards = [Action("B", m) for m in range(microbatches)]
        orders = [forwards + backwards for _ in range(stages)]
    if mode == "inference":
        # Forward-only: each rank runs its forwards in the schedule's order, nothing else.
        orders = [[a for a in order if a.kind == "F"] for order in orders]
    return orders


def _one_f_one_b(rank: int, stages: int, microbatches: int) -> list[Action]:
    warmup = min(stages - 1 - rank, microbatches)
    order = [Action("F", m) for m in range(warmup)]
    next_forward, next_backward = warmup, 0
    while next_forward < microbatches:
        order.append(Action("F", next_forward))
        order.append(Action("B", next_backward))
        next_forward += 1
        next_backward += 1
    order.extend(Action("B", m) for m in range(next_backward, microbatches))
    return order


def _interleaved(rank: int, stages: int, microbatches: int, chunks: int) -> list[Action]:
    """Megatron-LM's interleaved schedule (``forward_backward_pipelining_with_interleaving``).

    The k-th forward of a rank works on chunk (k // S) % V and micro-batch
    (k // (S*V)) * S + k % S: micro-batches go through the rank's chunks in groups of S. Backwards
    follow the same pattern with the chunks reversed.
    """
    total = microbatches * chunks

    def forward(k: int) -> Action:
        return Action("F", (k // (stages * chunks)) * stages + k % stages, (k // stages) % chunks)

    def backward(k: int) -> Action:
        return Action(
            "B", (k // (stages * chunks)) * stages + k % stages, chunks - 1 - (k // stages) % chunks
        )

    if microbatches == stages:
        warmup = total  # Megatron: with M == S all forwards come first
    else:
        warmup = min((stages - rank - 1) * 2 + (chunks - 1) * stages, total)
    order = [forward(k) for k in range(warmup)]
    for k in range(warmup, total):
        order.append(forward(k))
        order.append(backward(k - warmup))
    order.extend(backward(k) for k in range(total - warmup, total))
    return order


def peak_in_flight(order: list[Action]) -> int:
    """The most micro-batches (chunk forwards) whose backward has not run yet, along ``order``."""
    in_flight = peak = 0
    for action in order:
        in_flight += 1 if action.kind == "F" else -1
        peak = max(peak, in_flight)
    return peak
