"""The options of a pipeline run: their defaults, and the checks they pass before any process starts."""

from __future__ import annotations

from dataclasses import dataclass

from hone.errors import OptionError
from hone.pipeline import schedule as schedules
from hone.pipeline.source import PipelineSource
from hone.pipeline.types import BACKENDS, Backend, Link, Mode, Schedule

DEFAULT_TIMEOUT_S = 300.0  # how long a stage waits for another before every stage stops
DEFAULT_STEPS = 3  # the first warms up; the median of the others is reported
DEFAULT_LEARNING_RATE = 0.01  # SGD, train mode
DEFAULT_SINGLE_PROCESS_RUNS = 3  # timings of the whole batch in one process


@dataclass(frozen=True)
class PipelineOptions:
    """A checked run: S stages, M micro-batches of ``batch // microbatches`` samples each."""

    source: PipelineSource
    stages: int
    microbatches: int
    schedule: Schedule  # gpipe or 1f1b (the runtime does not run interleaved)
    mode: Mode
    batch: int  # samples per step, a multiple of microbatches
    threads: int  # torch (or onnxruntime) threads per stage
    steps: int
    timeout_s: float
    link: Link | None  # what the partition assumes; None: measured on the loopback
    learning_rate: float
    backend: Backend
    check: bool  # compare outputs (and gradients) with one process
    single_process_runs: int  # 0: do not time one process

    @property
    def train(self) -> bool:
        return self.mode == "train"

    @property
    def microbatch_size(self) -> int:
        return self.batch // self.microbatches


def pipeline_options(
    source: PipelineSource,
    *,
    stages: int,
    microbatches: int,
    schedule: str,
    mode: str,
    batch: int | None,
    threads: int | None,
    steps: int,
    timeout_s: float,
    link: Link | None,
    learning_rate: float,
    backend: str,
    check: bool,
    single_process_runs: int,
) -> PipelineOptions:
    """The checked options; an OptionError names the first one no run accepts and what would work.

    ``batch`` defaults to one sample per micro-batch, ``threads`` to the physical cores shared out
    over the stages."""
    batch = batch or microbatches
    schedules.check_schedule_args(schedule, mode, stages, microbatches)
    if schedule == "interleaved":
        raise OptionError(
            "the runtime runs --schedule gpipe or 1f1b; interleaved 1F1B is planned with "
            "`hone pipeline simulate --schedule interleaved`"
        )
    if batch % microbatches:
        raise OptionError(
            f"--batch {batch} is not divisible by --microbatches {microbatches}: every micro-batch "
            f"must have the same size; use --batch {(batch // microbatches + 1) * microbatches}"
        )
    if steps < 1:
        raise OptionError(f"steps must be at least 1, got {steps}")
    if source.kind == "onnx" and mode == "train":
        raise OptionError(
            f"{source.name} is an ONNX graph, which hone can only run forward; train with a torch "
            "source (a zoo name or file.py:factory)"
        )
    return PipelineOptions(
        source=source,
        stages=stages,
        microbatches=microbatches,
        schedule=schedules.schedule_named(schedule),
        mode=schedules.mode_named(mode),
        batch=batch,
        threads=threads or _default_threads(stages),
        steps=steps,
        timeout_s=timeout_s,
        link=link,
        learning_rate=learning_rate,
        backend=backend_named(backend),
        check=check,
        single_process_runs=single_process_runs,
    )


def backend_named(name: str) -> Backend:
    """``name`` as a Backend, or an OptionError that lists them."""
    for backend in BACKENDS:
        if name == backend:
            return backend
    raise OptionError(f"--backend {name!r} is not one of {', '.join(BACKENDS)}")


def check_world_size(world_size: int, stages: int) -> None:
    """Under torchrun: one process per stage."""
    if world_size != stages:
        raise OptionError(
            f"torchrun started {world_size} processes for --stages {stages}; start exactly one per stage "
            "(--nnodes x --nproc-per-node = --stages)"
        )


def _default_threads(stages: int) -> int:
    from hone.runtime import default_threads

    return max(1, default_threads() // stages)
