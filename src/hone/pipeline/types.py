"""The pipeline's fixed choices and result types, importing nothing heavy.

``run_pipeline`` returns a ``PipelineResult`` (per stage a ``PipelineStage``) on rank 0 and a
``StageDone`` on the other ranks of a torchrun launch; ``simulate`` returns a ``SimulationResult``.
The report renders these without importing the runtime or the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

Schedule = Literal["gpipe", "1f1b", "interleaved"]  # the runtime runs gpipe and 1f1b; the simulator all
Mode = Literal["inference", "train"]  # forward only, or forward, backward and an SGD step
Backend = Literal["gloo", "nccl"]  # torch.distributed: gloo on CPUs, NCCL with one GPU per stage
EventCategory = Literal["compute", "recv_wait", "optimizer"]
SourceKind = Literal["torch", "onnx"]  # a torch module (train and inference) or an ONNX graph (inference)

SCHEDULES: tuple[Schedule, ...] = get_args(Schedule)
MODES: tuple[Mode, ...] = get_args(Mode)
BACKENDS: tuple[Backend, ...] = get_args(Backend)


@dataclass(frozen=True)
class Link:
    """A point-to-point link between two ranks."""

    bandwidth_gbps: float  # gigabytes (1e9 bytes) per second
    latency_ms: float

    def transfer_ms(self, size_bytes: int) -> float:
        return size_bytes / (self.bandwidth_gbps * 1e6)


@dataclass
class TimelineEvent:
    name: str  # "F3", "B3", "recv F3", "optimizer"
    category: EventCategory
    start_ms: float  # from the step's start (all stages leave a barrier together)
    end_ms: float


@dataclass
class PipelineStage:
    """One stage of a measured run (the step with the median time)."""

    index: int
    blocks: list[str]
    cost_ms: float  # predicted compute per micro-batch, from the measured blocks
    forward_ms: float  # the forward part of cost_ms
    backward_ms: float  # the backward part (0 for inference)
    params: int
    activation_bytes: int  # sent to the next stage per micro-batch
    busy_ms: float  # measured compute in the step
    recv_wait_ms: float  # measured time blocked on an input that had not arrived
    idle_ms: float  # step_ms - busy_ms
    bubble: float  # idle_ms / step_ms
    optimizer_ms: float
    peak_in_flight: int  # micro-batches whose activations the stage held at once
    peak_activation_bytes: int
    link_latency_ms: float | None  # to the next stage, measured
    link_bandwidth_gbps: float | None


@dataclass
class PipelineResult:
    model: str
    schedule: Schedule
    mode: Mode
    backend: Backend
    batch: int
    microbatches: int
    microbatch_size: int
    threads_per_stage: int
    stages: list[PipelineStage]
    step_ms: float  # median over the measured steps
    steps_ms: list[float]
    bubble_measured: float  # mean over stages of idle / step
    bubble_formula: float  # (S-1)/(M+S-1)
    max_abs_error_vs_single_process: float  # outputs (inference) or losses (train)
    max_grad_rel_error_vs_single_process: float | None  # train: max |g - g_ref| / max |g_ref|
    single_process_ms: float  # the whole batch in one process with all the stages' threads
    simulated_step_ms: float  # the simulator on the stages' measured action times and link
    simulated_bubble: float
    planned_step_ms: float  # the simulator on the block costs measured before the run (one process)
    link: Link  # what the partition assumed
    partition_imbalance: float
    timeline: list[list[TimelineEvent]] = field(default_factory=list)  # per stage, median step


@dataclass(frozen=True)
class StageDone:
    """What ``run_pipeline`` returns on a torchrun rank other than 0: its stage ran; rank 0 holds
    the ``PipelineResult``."""

    rank: int
    world_size: int


@dataclass
class SimulatedEvent:
    rank: int
    action: str  # e.g. "F3", "B3.1"
    start_ms: float
    end_ms: float


@dataclass
class SimulatedStage:
    rank: int
    busy_ms: float
    idle_ms: float
    bubble: float
    peak_in_flight: int


@dataclass
class SimulationResult:
    schedule: Schedule
    mode: Mode
    stages: int
    microbatches: int
    chunks: int
    cores: int | None
    link: Link
    step_ms: float
    bubble: float  # mean over ranks of idle / step
    bubble_formula: float
    per_stage: list[SimulatedStage]
    events: list[SimulatedEvent] = field(default_factory=list)
