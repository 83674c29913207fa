"""A ``PipelineResult`` from the stages' reports: the median step, what each stage did in it, and
the simulator's step on the same plan, from the stages' measured action times and from the block
costs measured before the run."""

from __future__ import annotations

import os
import statistics

from hone.pipeline import schedule as schedules
from hone.pipeline.options import PipelineOptions
from hone.pipeline.partition import Partition, StagePlan
from hone.pipeline.simulate import StageCost, simulate
from hone.pipeline.types import Link, Mode, PipelineResult, PipelineStage, Schedule, SimulationResult
from hone.pipeline.worker import StageReport


def assemble_result(
    o: PipelineOptions,
    plan: Partition,
    reports: list[StageReport],
    *,
    error: float,
    grad_error: float | None,
    single_ms: float,
) -> PipelineResult:
    """The run's result; ``error``, ``grad_error`` and ``single_ms`` come from the reference."""
    schedule, mode, microbatches, threads = o.schedule, o.mode, o.microbatches, o.threads
    step_count = len(reports[0].steps)
    # All stages leave the same barrier, so a step ends when its slowest stage does.
    steps_ms = [max(r.steps[k].step_ms for r in reports) for k in range(step_count)]
    measured = list(range(1, step_count)) or [0]  # the first step warms up
    median_step = sorted(measured, key=lambda k: steps_ms[k])[len(measured) // 2]
    step_ms = steps_ms[median_step]
    stage_results = []
    for stage, report in zip(plan.stages, reports, strict=False):
        record = report.steps[median_step]
        idle = step_ms - record.compute_ms
        stage_results.append(
            PipelineStage(
                index=stage.index,
                blocks=stage.blocks,
                cost_ms=stage.cost_ms,
                forward_ms=stage.forward_ms,
                backward_ms=stage.backward_ms,
                params=stage.params,
                activation_bytes=stage.activation_bytes,
                busy_ms=record.compute_ms,
                recv_wait_ms=record.recv_wait_ms,
                idle_ms=idle,
                bubble=idle / step_ms,
                optimizer_ms=record.optimizer_ms,
                peak_in_flight=report.peak_in_flight,
                peak_activation_bytes=report.peak_activation_bytes,
                link_latency_ms=report.link_latency_ms,
                link_bandwidth_gbps=report.link_bandwidth_gbps,
            )
        )
    in_run = [_action_costs(report, stage) for report, stage in zip(reports, plan.stages, strict=False)]
    simulated = simulate_plan(
        plan, reports, schedule=schedule, mode=mode, microbatches=microbatches, threads=threads, costs=in_run
    )
    planned = simulate_plan(
        plan, reports, schedule=schedule, mode=mode, microbatches=microbatches, threads=threads
    )
    stages = len(plan.stages)
    return PipelineResult(
        model=o.source.name,
        schedule=schedule,
        mode=mode,
        backend=o.backend,
        batch=o.batch,
        microbatches=microbatches,
        microbatch_size=o.microbatch_size,
        threads_per_stage=threads,
        stages=stage_results,
        step_ms=step_ms,
        steps_ms=steps_ms,
        bubble_measured=sum(s.bubble for s in stage_results) / stages,
        bubble_formula=schedules.bubble_formula(stages, microbatches),
        max_abs_error_vs_single_process=error,
        max_grad_rel_error_vs_single_process=grad_error,
        single_process_ms=single_ms,
        simulated_step_ms=simulated.step_ms,
        simulated_bubble=simulated.bubble,
        planned_step_ms=planned.step_ms,
        link=plan.link,
        partition_imbalance=plan.imbalance,
        timeline=[r.steps[median_step].events for r in reports],
    )


def _action_costs(report: StageReport, stage: StagePlan) -> StageCost:
    """A stage's median forward and backward in the measured steps (the first warms up)."""
    measured = report.steps[1:] or report.steps
    forwards = [
        e.end_ms - e.start_ms
        for r in measured
        for e in r.events
        if e.category == "compute" and e.name[0] == "F"
    ]
    backwards = [
        e.end_ms - e.start_ms
        for r in measured
        for e in r.events
        if e.category == "compute" and e.name[0] == "B"
    ]
    return StageCost(
        statistics.median(forwards) if forwards else stage.forward_ms,
        statistics.median(backwards) if backwards else 0.0,
        stage.activation_bytes,
    )


def simulate_plan(
    plan: Partition,
    reports: list[StageReport] | None,
    *,
    schedule: Schedule,
    mode: Mode,
    microbatches: int,
    threads: int,
    costs: list[StageCost] | None = None,
) -> SimulationResult:
    """The simulator's step for ``plan`` (or ``costs``) with the link the stages measured.

    With the plan's block costs, processes that outnumber the cores share them in the simulation
    as they did in the run; ``costs`` measured in the run already carry that sharing.
    """
    link = plan.link
    if reports:
        latencies = [r.link_latency_ms for r in reports if r.link_latency_ms is not None]
        bandwidths = [r.link_bandwidth_gbps for r in reports if r.link_bandwidth_gbps]
        if latencies and bandwidths:
            link = Link(bandwidth_gbps=statistics.median(bandwidths), latency_ms=statistics.median(latencies))
    cores = max(1, (os.cpu_count() or 1) // threads)
    shared = cores if cores < len(plan.stages) and costs is None else None
    costs = costs or [StageCost(s.forward_ms, s.backward_ms, s.activation_bytes) for s in plan.stages]
    return simulate(costs, schedule=schedule, mode=mode, microbatches=microbatches, link=link, cores=shared)
