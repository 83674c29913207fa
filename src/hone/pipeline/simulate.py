"""Predict a pipeline step from per-stage costs, to plan past the machines at hand.

It replays the schedule's action lists (``hone.pipeline.schedule``, the same lists the runtime
executes) with modelled times instead of running them:

- an action starts when its rank has finished the previous action in its list and its input has
  arrived: a forward needs the activation of the same micro-batch from the previous (virtual)
  stage, a backward the gradient from the next one (the last stage's backward needs only its own
  forward);
- a message from rank a to rank b leaves when its action ends, waits for the a->b link to finish
  the messages before it (links are full duplex, one per ordered pair of ranks), takes
  bytes / bandwidth on the link and arrives ``latency`` later; sending does not stall compute
  (the runtime posts sends asynchronously).

A message is the activation (forward) or its gradient (backward), of ``output_bytes`` of the stage
that sends it. With ``cores`` set, ranks share that many cores the way processes on one CPU do
(processor sharing: k ranks computing at once on c < k cores each progress at c/k speed), which is
what the measured runs on a small machine see; leave it unset for one device per rank.

A rank's order is fixed, so each rank's messages on a link are produced in time order and the
link queue is exact. With dedicated devices the replay is a single pass over the actions
(S=64, M=1024 in about a second); processor sharing needs a global clock and is meant for
validation-sized runs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from hone.errors import OptionError
from hone.pipeline import schedule as schedules
from hone.pipeline.schedule import Action
from hone.pipeline.types import Link, SimulatedEvent, SimulatedStage, SimulationResult

MAX_STAGES = 64
MAX_MICROBATCHES = 1024
DEFAULT_MICROBATCHES = 8
# A backward computes two products for each of the forward's (the input's and the weights'
# gradients), so it costs about twice the forward.
BACKWARD_PER_FORWARD = 2.0


@dataclass(frozen=True)
class StageCost:
    """What one (virtual) stage costs per micro-batch."""

    forward_ms: float
    backward_ms: float = 0.0
    output_bytes: int = 0  # activation sent to the next stage (its gradient comes back the same size)


def stage_costs(
    forward_ms: Sequence[float], backward_ms: Sequence[float] | None = None, *, output_bytes: int = 0
) -> list[StageCost]:
    """One StageCost per (virtual) stage; without ``backward_ms`` each backward costs
    ``BACKWARD_PER_FORWARD`` times its forward."""
    backwards = backward_ms if backward_ms is not None else [BACKWARD_PER_FORWARD * f for f in forward_ms]
    return [StageCost(f, b, output_bytes) for f, b in zip(forward_ms, backwards, strict=False)]


def simulate(
    costs: Sequence[StageCost],
    *,
    schedule: str = "1f1b",
    mode: str = "train",
    microbatches: int | None = None,
    link: Link,
    chunks: int = 1,
    cores: int | None = None,
    keep_events: bool = False,
) -> SimulationResult:
    """Simulate one step. ``costs`` has one entry per virtual stage: S*V for V chunks per rank;
    ``microbatches`` defaults to ``DEFAULT_MICROBATCHES``."""
    if microbatches is None:
        microbatches = DEFAULT_MICROBATCHES
    if len(costs) % chunks:
        raise OptionError(f"{len(costs)} stage costs cannot be spread over {chunks} chunks per rank evenly")
    stages = len(costs) // chunks
    if stages > MAX_STAGES or microbatches > MAX_MICROBATCHES:
        raise OptionError(
            f"the simulator plans up to {MAX_STAGES} stages and {MAX_MICROBATCHES} micro-batches; "
            f"got S={stages}, M={microbatches}"
        )
    if cores is not None and cores < 1:
        raise OptionError(f"cores must be at least 1, got {cores}")
    if link.bandwidth_gbps <= 0 or link.latency_ms < 0:
        raise OptionError(f"link bandwidth must be positive and latency non-negative, got {link}")
    orders = schedules.build(schedule, mode, stages, microbatches, chunks)
    replay = _Replay(costs, orders, stages, chunks, link)
    events = replay.run_shared(cores) if cores is not None and cores < stages else replay.run_dedicated()
    step_ms = max(e.end_ms for e in events)
    per_stage = []
    for rank in range(stages):
        # The rank's own work; under core sharing its actions take longer than that on the clock.
        busy = replay.work_ms[rank]
        idle = step_ms - busy
        in_flight = 1 if mode == "inference" else schedules.peak_in_flight(orders[rank])
        per_stage.append(SimulatedStage(rank, busy, idle, idle / step_ms if step_ms else 0.0, in_flight))
    return SimulationResult(
        schedule=schedules.schedule_named(schedule),
        mode=schedules.mode_named(mode),
        stages=stages,
        microbatches=microbatches,
        chunks=chunks,
        cores=cores,
        link=link,
        step_ms=step_ms,
        bubble=sum(s.bubble for s in per_stage) / stages,
        bubble_formula=schedules.bubble_formula(stages, microbatches, chunks),
        per_stage=per_stage,
        events=events if keep_events else [],
    )


class _Replay:
    """The dependency bookkeeping shared by both clocks."""

    def __init__(
        self, costs: Sequence[StageCost], orders: list[list[Action]], stages: int, chunks: int, link: Link
    ) -> None:
        self.costs = costs
        self.orders = orders
        self.stages = stages
        self.last_virtual = stages * chunks - 1
        self.link = link
        # (kind, microbatch, virtual stage) -> when its input is available on the consuming rank
        self.arrival: dict[tuple[str, int, int], float] = {}
        self.link_free: dict[tuple[int, int], float] = {}
        self.work_ms = [0.0] * stages

    def virtual(self, rank: int, action: Action) -> int:
        return action.chunk * self.stages + rank

    def duration(self, rank: int, action: Action) -> float:
        cost = self.costs[self.virtual(rank, action)]
        return cost.forward_ms if action.kind == "F" else cost.backward_ms

    def ready_at(self, rank: int, action: Action) -> float | None:
        """When the input of ``action`` is there, or None while its producer has not finished."""
        v = self.virtual(rank, action)
        if action.kind == "F":
            return 0.0 if v == 0 else self.arrival.get(("F", action.microbatch, v))
        if v == self.last_virtual:
            return self.arrival.get(("own", action.microbatch, v))
        return self.arrival.get(("B", action.microbatch, v))

    def finished(self, rank: int, action: Action, end_ms: float) -> int | None:
        """Record what the end of ``action`` makes available, sending its message if it has one;
        returns the rank that receives it."""
        v = self.virtual(rank, action)
        if action.kind == "F":
            if v == self.last_virtual:
                self.arrival[("own", action.microbatch, v)] = end_ms
                return rank
            target_v, key = v + 1, ("F", action.microbatch, v + 1)
        else:
            if v == 0:
                return None
            target_v, key = v - 1, ("B", action.microbatch, v - 1)
        target_rank = target_v % self.stages
        if target_rank == rank:
            self.arrival[key] = end_ms
            return rank
        size = self.costs[min(v, target_v)].output_bytes
        pair = (rank, target_rank)
        leaves = max(end_ms, self.link_free.get(pair, 0.0))
        self.link_free[pair] = leaves + self.link.transfer_ms(size)
        self.arrival[key] = self.link_free[pair] + self.link.latency_ms
        return target_rank

    def run_dedicated(self) -> list[SimulatedEvent]:
        """One device per rank: advance a rank as far as its inputs allow, and wake the rank its
        messages go to; each action is visited once or twice."""
        events: list[SimulatedEvent] = []
        position = [0] * self.stages
        free_at = [0.0] * self.stages
        to_visit = deque(range(self.stages))
        while to_visit:
            rank = to_visit.popleft()
            order = self.orders[rank]
            while position[rank] < len(order):
                action = order[position[rank]]
                ready = self.ready_at(rank, action)
                if ready is None:
                    break
                start = max(free_at[rank], ready)
                end = start + self.duration(rank, action)
                self.work_ms[rank] += end - start
                events.append(SimulatedEvent(rank, str(action), start, end))
                free_at[rank] = end
                woken = self.finished(rank, action, end)
                if woken is not None and woken != rank:
                    to_visit.append(woken)
                position[rank] += 1
        assert all(position[r] == len(self.orders[r]) for r in range(self.stages)), (
            "schedule deadlocked: no rank can start its next action"
        )
        return events

    def run_shared(self, cores: int) -> list[SimulatedEvent]:
        """Ranks share ``cores``: a global clock; k running actions progress at min(1, cores/k)."""
        events: list[SimulatedEvent] = []
        position = [0] * self.stages
        free_at = [0.0] * self.stages
        running: dict[int, tuple[Action, float, float]] = {}  # rank -> (action, start, work left ms)
        now = 0.0
        while True:
            starts: dict[int, float] = {}  # rank -> when its next action can start
            for rank in range(self.stages):
                if rank in running or position[rank] >= len(self.orders[rank]):
                    continue
                action = self.orders[rank][position[rank]]
                ready = self.ready_at(rank, action)
                if ready is None:
                    continue
                start = max(ready, free_at[rank])
                if start <= now + 1e-12:
                    work = self.duration(rank, action)
                    self.work_ms[rank] += work
                    running[rank] = (action, now, work)
                else:
                    starts[rank] = start
            if not running and not starts:
                if any(position[r] < len(self.orders[r]) for r in range(self.stages)):
                    raise AssertionError("schedule deadlocked: no rank can start its next action")
                return events
            rate = min(1.0, cores / len(running)) if running else 1.0
            step = min(
                min((left / rate for _, _, left in running.values()), default=float("inf")),
                min(starts.values(), default=float("inf")) - now,
            )
            now += step
            for rank, (action, start, left) in list(running.items()):
                left -= step * rate
                if left > 1e-9:
                    running[rank] = (action, start, left)
                    continue
                del running[rank]
                events.append(SimulatedEvent(rank, str(action), start, now))
                free_at[rank] = now
                self.finished(rank, action, now)
                position[rank] += 1


def fewest_microbatches(
    costs: Sequence[StageCost],
    max_bubble: float,
    *,
    schedule: str = "1f1b",
    mode: str = "train",
    link: Link,
    chunks: int = 1,
    cores: int | None = None,
) -> SimulationResult:
    """The simulation with the fewest micro-batches whose bubble is at most ``max_bubble``.

    The bubble falls as M grows (more work over the same fill and drain), so a binary search over
    M (multiples of S for interleaved) finds it.
    """
    if not 0 < max_bubble < 1:
        raise OptionError(f"--max-bubble must be between 0 and 1, got {max_bubble}")
    stages = len(costs) // chunks
    step = stages if schedule == "interleaved" else 1
    candidates = list(range(step, MAX_MICROBATCHES + 1, step))

    def run(m: int) -> SimulationResult:
        return simulate(
            costs, schedule=schedule, mode=mode, microbatches=m, link=link, chunks=chunks, cores=cores
        )

    best = run(candidates[-1])
    if best.bubble > max_bubble + 1e-12:
        raise OptionError(
            f"even {candidates[-1]} micro-batches leave a {best.bubble:.1%} bubble; the pipeline is "
            "paced by something other than fill and drain (an unbalanced stage or a slow link)"
        )
    low, high = 0, len(candidates) - 1
    while low < high:
        middle = (low + high) // 2
        result = run(candidates[middle])
        if result.bubble <= max_bubble + 1e-12:  # M giving exactly the target counts
            high, best = middle, result
        else:
            low = middle + 1
    return best if best.microbatches == candidates[high] else run(candidates[high])
