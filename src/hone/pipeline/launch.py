"""Start the stage processes and wait for their reports: spawned here on 127.0.0.1, or joined under
torchrun (its rendezvous, any hosts).

A failing stage stops every stage; the error is one line naming the stage that failed first for
its own reason and what became of the others.
"""

from __future__ import annotations

import os
import queue
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from hone.errors import ExecutionError, HoneError
from hone.pipeline.types import Backend
from hone.pipeline.worker import StageFailure, StageProgram, StageReport, run_connected_stage, stage_main

Plan = TypeVar("Plan")


def launch(programs: list[StageProgram], *, timeout_s: float) -> list[StageReport]:
    """Spawn one process per program, wait for every report; on a failure stop all and raise."""
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=stage_main, args=(p, results), daemon=True) for p in programs]
    for process in processes:
        process.start()
    reports: dict[int, StageReport] = {}
    failures: list[StageFailure] = []
    deadline = time.monotonic() + timeout_s + 30  # the stages' own timeout fires first
    try:
        while len(reports) < len(programs):
            try:
                message = results.get(timeout=0.5)
            except queue.Empty:
                message = None
            if isinstance(message, StageReport):
                reports[message.rank] = message
            elif isinstance(message, StageFailure):
                failures.append(message)
                _collect_more_failures(results, failures, processes)
                raise _failure_error(failures, len(programs), reported=set(reports))
            else:
                dead = [
                    (rank, p.exitcode)
                    for rank, p in enumerate(processes)
                    if p.exitcode not in (None, 0) and rank not in reports
                ]
                if dead:
                    _collect_more_failures(results, failures, processes)
                    if failures:
                        raise _failure_error(failures, len(programs), reported=set(reports))
                    rank, code = dead[0]
                    raise ExecutionError(
                        f"stage {rank} exited with code {code} before reporting (killed, or out of "
                        "memory?); the other stages were stopped"
                    )
                if time.monotonic() > deadline:
                    raise ExecutionError(
                        f"the pipeline did not finish within {timeout_s:.0f} s; the stages were stopped "
                        "(raise --timeout-s for slow models)"
                    )
    finally:
        for process in processes:
            process.join(timeout=10 if len(reports) == len(programs) else 0.5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
    return [reports[rank] for rank in range(len(programs))]


def _collect_more_failures(results: Any, failures: list[StageFailure], processes: list[Any]) -> None:
    """Give the other stages a moment to report why they stopped too."""
    until = time.monotonic() + 2
    drained = False
    while time.monotonic() < until and (not drained or any(p.is_alive() for p in processes)):
        try:
            message = results.get(timeout=0.2)
        except queue.Empty:
            drained = True
            continue
        if isinstance(message, StageFailure):
            failures.append(message)
    for process in processes:
        if process.is_alive():
            process.kill()


def _failure_error(failures: list[StageFailure], stage_count: int, reported: set[int]) -> ExecutionError:
    """One line: the stage that failed first for its own reason, and what became of the others."""
    causes = [f for f in failures if not f.peer_failure] or failures
    cause = min(causes, key=lambda f: f.rank)
    others = sorted({f.rank for f in failures} - {cause.rank})
    silent = sorted(set(range(stage_count)) - {f.rank for f in failures} - reported)
    tail = ""
    if others:
        tail += f"; {_stages_text(others)} then stopped too"
    if silent:
        tail += (
            f"; {_stages_text(silent)} never answered (stuck in compute?) and"
            f" {'was' if len(silent) == 1 else 'were'} killed"
        )
    verb = "gave up waiting" if cause.peer_failure else "failed"
    return ExecutionError(
        f"stage {cause.rank} of {stage_count} {verb} at {cause.where}: {cause.error}{tail}; "
        "no stage was left running",
        rank=cause.rank,
    )


def _stages_text(ranks: list[int]) -> str:
    return ("stage " if len(ranks) == 1 else "stages ") + ", ".join(map(str, ranks))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, for the stages' rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Under torchrun ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TorchrunWorld:
    """This process's place in a torchrun launch."""

    rank: int
    size: int


def torchrun_world() -> TorchrunWorld | None:
    """Where torchrun put this process (``RANK`` and ``WORLD_SIZE`` set), else None."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return TorchrunWorld(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    return None


def run_under_torchrun(
    world: TorchrunWorld,
    plan: Callable[[], tuple[Plan, list[StageProgram]]],
    *,
    backend: Backend,
    timeout_s: float,
) -> tuple[Plan, list[StageReport]] | None:
    """Run this rank's stage of a torchrun launch; rank 0 gets the plan and every report, the other
    ranks None.

    Rank 0 calls ``plan`` and sends every stage its program, weights and data through the process
    group (so no file has to be shared between hosts); each rank runs its stage; rank 0 gathers the
    reports. A HoneError in ``plan`` is raised on every rank instead of leaving them waiting.
    """
    import torch.distributed as dist

    dist.init_process_group(backend, init_method="env://", timeout=timedelta(seconds=timeout_s))
    try:
        parcel: list[Any] = [None]
        planned: Plan | None = None
        if world.rank == 0:
            try:
                planned, programs = plan()
                parcel[0] = [_pack(program) for program in programs]
            except HoneError as exc:
                parcel[0] = exc  # the other ranks raise it too instead of waiting for a plan
        dist.broadcast_object_list(parcel, src=0)
        if isinstance(parcel[0], HoneError):
            raise parcel[0]
        program = _unpack(parcel[0][world.rank])
        report = run_connected_stage(program)
        gathered: list[Any] | None = [None] * world.size if world.rank == 0 else None
        dist.gather_object(report, gathered, dst=0)
    finally:
        dist.destroy_process_group()
    if world.rank != 0:
        return None
    assert planned is not None and gathered is not None
    return planned, list(gathered)


def _pack(program: StageProgram) -> tuple[StageProgram, bytes | None, bytes | None]:
    """A program with the bytes of its weights and data files, to travel to another host."""
    weights = Path(program.weights_path).read_bytes() if program.weights_path else None
    data = Path(program.data_path).read_bytes() if program.data_path else None
    return program, weights, data


def _unpack(parcel: tuple[StageProgram, bytes | None, bytes | None]) -> StageProgram:
    program, weights, data = parcel
    folder = Path(tempfile.mkdtemp(prefix="hone-stage-"))
    if weights is not None:
        (folder / "weights.pt").write_bytes(weights)
        program.weights_path = str(folder / "weights.pt")
    if data is not None:
        (folder / "data.pt").write_bytes(data)
        program.data_path = str(folder / "data.pt")
    return program
