"""``run_pipeline``: measure the blocks, partition, run the stages as processes, check, compare.

    source ─▶ blocks ─▶ measured costs ─▶ partition ─▶ S stage processes (torch.distributed)
                                              │                │ timelines, outputs, gradients
                                              ▼                ▼
                                          simulator ──▶ PipelineResult ◀── single-process reference

The steps live in their own modules: ``options`` (checks and defaults), ``plan`` (blocks,
partition, stage programs), ``launch`` (spawned processes or torchrun), ``reference`` (one process,
same micro-batches) and ``assemble`` (the result). The stages are spawned here on 127.0.0.1 (gloo;
NCCL when ``backend="nccl"``), one per stage.
"""

from __future__ import annotations

import os

from hone.pipeline.assemble import assemble_result
from hone.pipeline.launch import TorchrunWorld, free_port, launch, run_under_torchrun, torchrun_world
from hone.pipeline.options import (
    DEFAULT_LEARNING_RATE,
    DEFAULT_SINGLE_PROCESS_RUNS,
    DEFAULT_STEPS,
    DEFAULT_TIMEOUT_S,
    PipelineOptions,
    check_world_size,
    pipeline_options,
)
from hone.pipeline.plan import Prepared, plan_run
from hone.pipeline.reference import compare_with_reference, time_single_process
from hone.pipeline.source import PipelineSource
from hone.pipeline.types import Link, PipelineResult, StageDone
from hone.pipeline.worker import StageProgram, StageReport


def run_pipeline(
    source: PipelineSource,
    *,
    stages: int,
    microbatches: int,
    schedule: str = "1f1b",
    mode: str = "inference",
    batch: int | None = None,
    threads: int | None = None,
    steps: int = DEFAULT_STEPS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    link: Link | None = None,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    backend: str = "gloo",
    check: bool = True,
    single_process_runs: int = DEFAULT_SINGLE_PROCESS_RUNS,
) -> PipelineResult | StageDone:
    """Partition ``source`` into ``stages`` processes and run ``steps`` steps of ``schedule``.

    ``schedule`` is gpipe or 1f1b, ``mode`` inference or train, ``backend`` gloo or nccl; ``batch``
    defaults to one sample per micro-batch, ``threads`` (per stage) to the physical cores over the
    stages, ``link`` (what the partition assumes) to one measured on the loopback.

    The stages are spawned here on 127.0.0.1 and the result is a PipelineResult. Under torchrun
    (``RANK`` and ``WORLD_SIZE`` set) this process is one of the stages and the others are
    torchrun's, on any host: rank 0 returns the PipelineResult, every other rank a StageDone.

    ``check`` compares outputs (and gradients) with one process running the same micro-batches;
    ``single_process_runs`` times the whole batch in one process (0 skips it: NaN).
    """
    world = torchrun_world()
    if world is not None:
        check_world_size(world.size, stages)
    options = pipeline_options(
        source,
        stages=stages,
        microbatches=microbatches,
        schedule=schedule,
        mode=mode,
        batch=batch,
        threads=threads,
        steps=steps,
        timeout_s=timeout_s,
        link=link,
        learning_rate=learning_rate,
        backend=backend,
        check=check,
        single_process_runs=single_process_runs,
    )
    if world is not None:
        return _run_under_torchrun(options, world)
    prepared, programs = plan_run(options, init_method=f"tcp://127.0.0.1:{free_port()}", pin=True)
    reports = launch(programs, timeout_s=timeout_s)
    return _finish(options, prepared, reports)


def _run_under_torchrun(o: PipelineOptions, world: TorchrunWorld) -> PipelineResult | StageDone:
    """This process is stage ``world.rank``; rank 0 plans, and finishes with every stage's report."""

    def plan() -> tuple[Prepared, list[StageProgram]]:
        return plan_run(o, init_method="env://", pin=False)

    outcome = run_under_torchrun(world, plan, backend=o.backend, timeout_s=o.timeout_s)
    if outcome is None:
        return StageDone(rank=world.rank, world_size=world.size)
    prepared, reports = outcome
    return _finish(o, prepared, reports)


def _finish(o: PipelineOptions, prepared: Prepared, reports: list[StageReport]) -> PipelineResult:
    """Check the answers against one process, time one process, and build the result."""
    error, grad_error = float("nan"), None
    if o.check:
        error, grad_error = compare_with_reference(prepared, reports, o.train, o.threads)
    single_ms = float("nan")
    if o.single_process_runs > 0:
        single_ms = time_single_process(
            prepared, o.train, min(o.threads * o.stages, os.cpu_count() or 1), runs=o.single_process_runs
        )
    return assemble_result(o, prepared.plan, reports, error=error, grad_error=grad_error, single_ms=single_ms)
