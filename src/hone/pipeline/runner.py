"""``hone pipeline``: measure the blocks, partition, run the stages as processes, check, compare.

    source ─▶ blocks ─▶ measured costs ─▶ partition ─▶ S stage processes (torch.distributed)
                                              │                │ timelines, outputs, gradients
                                              ▼                ▼
                                          simulator ──▶ PipelineResult ◀── single-process reference

The stage processes are spawned here on 127.0.0.1 (gloo; NCCL when ``backend="nccl"``), one per
stage. The parent saves the weights once and every stage loads them, so the pipeline and the
single-process reference hold the same model. The reference runs the same micro-batches in the
same order with the same thread count, so a pipeline that is right matches it exactly in the
forward and to rounding in the gradients.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np

from hone.errors import ExecutionError, HoneError, OptionError
from hone.pipeline import schedule as schedules
from hone.pipeline.partition import Partition, StagePlan, measure_loopback_link, partition
from hone.pipeline.simulate import Link, StageCost, simulate
from hone.pipeline.source import PipelineSource
from hone.pipeline.worker import StageFailure, StageProgram, StageReport, TimelineEvent, stage_main

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 300.0
SEED = 0


@dataclass
class StageResult:
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
    schedule: str
    mode: str
    backend: str
    batch: int
    microbatches: int
    microbatch_size: int
    threads_per_stage: int
    stages: list[StageResult]
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


def run_pipeline(
    source: PipelineSource,
    *,
    stages: int,
    microbatches: int,
    schedule: str = "1f1b",
    mode: str = "inference",
    batch: int | None = None,
    threads: int | None = None,
    steps: int = 3,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    link: Link | None = None,
    learning_rate: float = 0.01,
    backend: str = "gloo",
    check: bool = True,
    single_process_runs: int = 3,
) -> PipelineResult:
    """Partition ``source`` into ``stages`` processes and run ``steps`` steps of ``schedule``.

    The stages are spawned here on 127.0.0.1; under torchrun (``RANK`` and ``WORLD_SIZE`` set) this
    process is one of them and the others are torchrun's, on any host (see ``_run_under_torchrun``),
    and only rank 0 returns the result (the others return None).

    ``check`` compares outputs (and gradients) with one process running the same micro-batches;
    ``single_process_runs`` times the whole batch in one process (0 skips it: NaN).
    """
    options = _Options(
        source,
        stages,
        microbatches,
        schedule,
        mode,
        batch or microbatches,
        threads,
        steps,
        timeout_s,
        link,
        learning_rate,
        backend,
        check,
        single_process_runs,
    )
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return _run_under_torchrun(options)
    _check_options(options)
    port = _free_port()
    prepared, programs = _plan(options, init_method=f"tcp://127.0.0.1:{port}", pin=True)
    reports = launch(programs, timeout_s=timeout_s)
    return _finish(options, prepared, reports)


@dataclass
class _Options:
    source: PipelineSource
    stages: int
    microbatches: int
    schedule: str
    mode: str
    batch: int
    threads: int | None
    steps: int
    timeout_s: float
    link: Link | None
    learning_rate: float
    backend: str
    check: bool
    single_process_runs: int


def _check_options(o: _Options) -> None:
    schedules.check_schedule_args(o.schedule, o.mode, o.stages, o.microbatches)
    if o.schedule == "interleaved":
        raise OptionError(
            "the runtime runs --schedule gpipe or 1f1b; interleaved 1F1B is planned with "
            "`hone pipeline simulate --schedule interleaved`"
        )
    if o.batch % o.microbatches:
        raise OptionError(
            f"--batch {o.batch} is not divisible by --microbatches {o.microbatches}: every micro-batch "
            f"must have the same size; use --batch {(o.batch // o.microbatches + 1) * o.microbatches}"
        )
    if o.steps < 1:
        raise OptionError(f"steps must be at least 1, got {o.steps}")
    if o.source.kind == "onnx" and o.mode == "train":
        raise OptionError(
            f"{o.source.name} is an ONNX graph, which hone can only run forward; train with a torch "
            "source (a zoo name or file.py:factory)"
        )
    if o.backend not in ("gloo", "nccl"):
        raise OptionError(f"--backend {o.backend!r} is not one of gloo, nccl")


def _threads(o: _Options) -> int:
    from hone.runtime import default_threads

    return o.threads or max(1, default_threads() // o.stages)


def _plan(o: _Options, *, init_method: str, pin: bool) -> tuple[_Prepared, list[StageProgram]]:
    """Measure the blocks, partition them, write weights and data, and describe every stage."""
    threads = _threads(o)
    train = o.mode == "train"
    workdir = Path(tempfile.mkdtemp(prefix="hone-pipeline-"))
    plan_link = o.link or measure_loopback_link()
    if o.source.kind == "torch":
        prepared = _prepare_torch(
            o.source, workdir, o.batch, o.microbatches, o.stages, train, threads, plan_link
        )
    else:
        prepared = _prepare_onnx(o.source, workdir, o.batch, o.microbatches, o.stages, threads, plan_link)
    programs = []
    last = o.stages - 1
    for index, stage in enumerate(prepared.plan.stages):
        programs.append(
            StageProgram(
                rank=index,
                world_size=o.stages,
                init_method=init_method,
                backend=o.backend,
                timeout_s=o.timeout_s,
                threads=threads,
                mode=o.mode,
                schedule=o.schedule,
                microbatches=o.microbatches,
                steps=o.steps,
                block_range=(stage.first_block, stage.last_block),
                recv_shape=prepared.boundary_shapes[index - 1] if index > 0 else None,
                send_shape=prepared.boundary_shapes[index] if index < last else None,
                recv_dtype=prepared.boundary_dtypes[index - 1] if index > 0 else "float32",
                send_dtype=prepared.boundary_dtypes[index] if index < last else "float32",
                factory=o.source.factory,
                weights_path=str(prepared.weights_path) if prepared.weights_path else None,
                onnx_stage=prepared.onnx_stages[index] if prepared.onnx_stages else None,
                data_path=str(prepared.data_path) if index in (0, last) else None,
                learning_rate=o.learning_rate,
                cpus=_stage_cpus(index, o.stages, threads) if pin else None,
            )
        )
    return prepared, programs


def _finish(o: _Options, prepared: _Prepared, reports: list[StageReport]) -> PipelineResult:
    """Check the answers against one process, time one process, and build the result."""
    threads = _threads(o)
    train = o.mode == "train"
    error, grad_error = float("nan"), None
    if o.check:
        error, grad_error = _compare_with_reference(prepared, reports, train, threads)
    single_ms = float("nan")
    if o.single_process_runs > 0:
        single_ms = _time_single_process(
            prepared, train, min(threads * o.stages, os.cpu_count() or 1), runs=o.single_process_runs
        )
    return _result(
        o.source,
        prepared.plan,
        prepared,
        reports,
        schedule=o.schedule,
        mode=o.mode,
        backend=o.backend,
        batch=o.batch,
        microbatches=o.microbatches,
        micro=o.batch // o.microbatches,
        threads=threads,
        error=error,
        grad_error=grad_error,
        single_ms=single_ms,
    )


def _run_under_torchrun(o: _Options) -> PipelineResult | None:
    """This process is stage RANK of WORLD_SIZE, started by torchrun (its rendezvous, any hosts).

    Rank 0 plans and sends every stage its program, weights and data through the process group (so
    no file has to be shared between hosts); each rank runs its stage; rank 0 gathers the reports.
    """
    import torch.distributed as dist

    from hone.pipeline.worker import run_connected_stage

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world != o.stages:
        raise OptionError(
            f"torchrun started {world} processes for --stages {o.stages}; start exactly one per stage "
            "(--nnodes x --nproc-per-node = --stages)"
        )
    dist.init_process_group(o.backend, init_method="env://", timeout=timedelta(seconds=o.timeout_s))
    try:
        parcel: list[object] = [None]
        prepared = None
        if rank == 0:
            try:
                _check_options(o)
                prepared, programs = _plan(o, init_method="env://", pin=False)
                parcel[0] = [_pack(program) for program in programs]
            except HoneError as exc:
                parcel[0] = exc  # the other ranks raise it too instead of waiting for a plan
        dist.broadcast_object_list(parcel, src=0)
        if isinstance(parcel[0], HoneError):
            raise parcel[0]
        program = _unpack(parcel[0][rank])
        report = run_connected_stage(program)
        gathered: list[object] | None = [None] * world if rank == 0 else None
        dist.gather_object(report, gathered, dst=0)
    finally:
        dist.destroy_process_group()
    if rank != 0:
        return None
    assert prepared is not None and gathered is not None
    return _finish(o, prepared, [r for r in gathered])  # type: ignore[misc]


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


# Preparing ------------------------------------------------------------------------------------------


@dataclass
class _Prepared:
    plan: Partition
    boundary_shapes: list[tuple[int, ...]]  # per stage boundary, per micro-batch
    boundary_dtypes: list[str]  # torch dtype names
    data_path: Path
    inputs: list  # per micro-batch: a tensor (torch) or feeds (onnx)
    targets: list
    weights_path: Path | None = None
    factory: object = None
    onnx_stages: list[bytes] | None = None
    onnx_whole: bytes | None = None
    full_batch: object = None


def _prepare_torch(
    source: PipelineSource,
    workdir: Path,
    batch: int,
    microbatches: int,
    stages: int,
    train: bool,
    threads: int,
    link: Link,
) -> _Prepared:
    import torch

    from hone.data import sample_batch, synthesize
    from hone.pipeline.blocks import measure_block_costs, torch_blocks

    assert source.factory is not None and source.input_spec is not None
    module = source.factory()
    weights_path = workdir / "weights.pt"
    torch.save(module.state_dict(), weights_path)  # before costing: training mode moves BN stats
    blocks = torch_blocks(module)
    feeds = (
        sample_batch(source.samples, [source.input_spec], batch=batch)
        if source.samples is not None
        else synthesize([source.input_spec], batch=batch, dims=source.dims, seed=SEED)
    )
    full = torch.from_numpy(feeds[source.input_spec.name])
    inputs = list(full.chunk(microbatches))
    costs = measure_block_costs(blocks, inputs[0], train=train, threads=threads)
    plan = partition(costs, stages, link=link, train=train)
    shapes = [costs[s.last_block].output_shape for s in plan.stages]
    dtypes = [costs[s.last_block].output_dtype for s in plan.stages]
    generator = torch.Generator().manual_seed(SEED + 1)
    out_shape = (batch, *costs[-1].output_shape[1:])
    targets = list(torch.randn(out_shape, generator=generator).chunk(microbatches)) if train else []
    data_path = workdir / "data.pt"
    torch.save({"inputs": inputs, "targets": targets}, data_path)
    return _Prepared(
        plan,
        shapes,
        dtypes,
        data_path,
        inputs,
        targets,
        weights_path=weights_path,
        factory=source.factory,
        full_batch=full,
    )


def _prepare_onnx(
    source: PipelineSource,
    workdir: Path,
    batch: int,
    microbatches: int,
    stages: int,
    threads: int,
    link: Link,
) -> _Prepared:
    import onnx
    import torch

    from hone.data import sample_batch, synthesize
    from hone.pipeline.blocks import BlockCost
    from hone.pipeline.onnx_stages import measure_block_ms, onnx_blocks, stage_model

    model = source.onnx
    assert model is not None
    blocks = onnx_blocks(model)
    full = (
        sample_batch(source.samples, model.inputs, batch=batch)
        if source.samples is not None
        else synthesize(model.inputs, batch=batch, dims=source.dims, seed=SEED)
    )
    inputs = [
        {
            name: value[i * (batch // microbatches) : (i + 1) * (batch // microbatches)]
            for name, value in full.items()
        }
        for i in range(microbatches)
    ]
    if stages > len(blocks):
        raise OptionError(
            f"--stages {stages} is more than the {len(blocks)} blocks {model.name} splits into at "
            f"single-tensor boundaries; use --stages {len(blocks)} or fewer"
        )
    measured = measure_block_ms(model, blocks, inputs[0], threads=threads)
    shapes, dtypes = _onnx_block_outputs(model, blocks, inputs[0])
    costs = [
        BlockCost(block.name, ms, 0.0, block.params, size, shapes[i], dtypes[i])
        for i, (block, (ms, size)) in enumerate(zip(blocks, measured, strict=False))
    ]
    plan = partition(costs, stages, link=link, train=False)
    stage_bytes = [
        stage_model(model, blocks[s.first_block : s.last_block + 1]).SerializeToString() for s in plan.stages
    ]
    for index, s in enumerate(plan.stages[:-1]):
        boundary = blocks[s.last_block].output_names
        if len(boundary) != 1:  # a cut always carries one tensor; the last block may have more
            raise AssertionError(f"stage {index} ends on {boundary}")
    torch_inputs = [
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feed.items()} for feed in inputs
    ]
    data_path = workdir / "data.pt"
    torch.save({"inputs": torch_inputs, "targets": []}, data_path)
    onnx_source = model.onnx_source()
    whole = onnx.load_from_string(onnx_source) if isinstance(onnx_source, bytes) else onnx.load(onnx_source)
    return _Prepared(
        plan,
        [shapes[s.last_block] for s in plan.stages],
        [dtypes[s.last_block] for s in plan.stages],
        data_path,
        inputs,
        [],
        onnx_stages=stage_bytes,
        onnx_whole=whole.SerializeToString(),
        full_batch=full,
    )


def _onnx_block_outputs(model, blocks, feeds) -> tuple[list[tuple[int, ...]], list[str]]:  # noqa: ANN001
    """Shape and torch dtype name of each block's first output on one micro-batch."""
    import onnxruntime as ort
    import torch

    from hone.pipeline.onnx_stages import stage_model

    shapes, dtypes = [], []
    values = dict(feeds)
    for block in blocks:
        session = ort.InferenceSession(
            stage_model(model, [block]).SerializeToString(), providers=["CPUExecutionProvider"]
        )
        outputs = session.run(None, {i.name: values[i.name] for i in session.get_inputs()})
        values.update(zip(block.output_names, outputs, strict=False))
        shapes.append(tuple(outputs[0].shape))
        dtypes.append(str(torch.from_numpy(outputs[0][:0].copy()).dtype).removeprefix("torch."))
    return shapes, dtypes


# Launching ------------------------------------------------------------------------------------------


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


def _collect_more_failures(results, failures: list[StageFailure], processes) -> None:  # noqa: ANN001
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


def _stage_cpus(index: int, stages: int, threads: int) -> tuple[int, ...] | None:
    """Each stage on its own CPUs when they go round (no migrations, no two stages on one core);
    None, letting the OS share them, when there are more stages than CPUs."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    available = sorted(os.sched_getaffinity(0))
    if stages * threads > len(available):
        return None
    return tuple(available[index * threads : (index + 1) * threads])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Checking and timing ----------------------------------------------------------------------------------


def _compare_with_reference(
    prepared: _Prepared, reports: list[StageReport], train: bool, threads: int
) -> tuple[float, float | None]:
    """Max abs error of outputs (or losses) and max relative gradient error vs one process, which
    runs the same micro-batches in the same order with a stage's thread count."""
    if prepared.onnx_whole is not None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(prepared.onnx_whole, options, providers=["CPUExecutionProvider"])
        reference = [session.run(None, feeds)[0] for feeds in prepared.inputs]
        got = reports[-1].outputs or []
        return _max_abs(got, reference), None
    import torch

    from hone.pipeline.blocks import torch_blocks

    module = prepared.factory()
    module.load_state_dict(torch.load(prepared.weights_path, weights_only=True))
    chain = torch.nn.Sequential(*(block for _, block in torch_blocks(module)))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _torch_reference(chain, module, prepared, reports, train)
    finally:
        torch.set_num_threads(previous)


def _torch_reference(chain, module, prepared: _Prepared, reports: list[StageReport], train: bool):  # noqa: ANN001, ANN202
    import torch

    if not train:
        chain.eval()
        with torch.no_grad():
            reference = [chain(x).numpy() for x in prepared.inputs]
        return _max_abs(reports[-1].outputs or [], reference), None
    chain.train()
    losses = []
    for x, target in zip(prepared.inputs, prepared.targets, strict=False):
        loss = torch.nn.functional.mse_loss(chain(x), target) / len(prepared.inputs)
        loss.backward()
        losses.append(float(loss.detach()))
    forward_error = _max_abs([np.array(v) for v in reports[-1].losses or []], [np.array(v) for v in losses])
    names = dict(module.named_parameters())
    worst = 0.0
    compared = 0
    for report in reports:
        for name, gradient in (report.gradients or {}).items():
            expected = names[name].grad.numpy()
            scale = float(np.abs(expected).max()) or 1.0
            worst = max(worst, float(np.abs(gradient - expected).max()) / scale)
            compared += 1
    expected_count = sum(1 for p in names.values() if p.grad is not None)
    if compared < expected_count:
        raise ExecutionError(f"the stages returned {compared} gradients for {expected_count} parameters")
    return forward_error, worst


def _max_abs(got: list, reference: list) -> float:
    if len(got) != len(reference):
        raise ExecutionError(
            f"the last stage returned {len(got)} micro-batch outputs, expected {len(reference)}"
        )
    return max(
        (float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(got, reference, strict=False)),
        default=0.0,
    )


def _time_single_process(prepared: _Prepared, train: bool, threads: int, runs: int = 3) -> float:
    """The whole batch in one process, no pipeline: what the pipeline has to beat."""
    if prepared.onnx_whole is not None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(prepared.onnx_whole, options, providers=["CPUExecutionProvider"])
        feeds = prepared.full_batch
        session.run(None, feeds)
        times = []
        for _ in range(runs):
            began = time.perf_counter()
            session.run(None, feeds)
            times.append(1000 * (time.perf_counter() - began))
        return statistics.median(times)
    import torch

    from hone.pipeline.blocks import torch_blocks

    module = prepared.factory()
    module.load_state_dict(torch.load(prepared.weights_path, weights_only=True))
    chain = torch.nn.Sequential(*(block for _, block in torch_blocks(module)))
    chain.train(train)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = []
        for _ in range(runs + 1):
            began = time.perf_counter()
            if train:
                torch.nn.functional.mse_loss(
                    chain(prepared.full_batch), torch.cat(prepared.targets)
                ).backward()
            else:
                with torch.no_grad():
                    chain(prepared.full_batch)
            times.append(1000 * (time.perf_counter() - began))
        return statistics.median(times[1:])
    finally:
        torch.set_num_threads(previous)


def _result(
    source: PipelineSource,
    plan: Partition,
    prepared: _Prepared,
    reports: list[StageReport],
    *,
    schedule: str,
    mode: str,
    backend: str,
    batch: int,
    microbatches: int,
    micro: int,
    threads: int,
    error: float,
    grad_error: float | None,
    single_ms: float,
) -> PipelineResult:
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
            StageResult(
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
        model=source.name,
        schedule=schedule,
        mode=mode,
        backend=backend,
        batch=batch,
        microbatches=microbatches,
        microbatch_size=micro,
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
    schedule: str,
    mode: str,
    microbatches: int,
    threads: int,
    costs: list[StageCost] | None = None,
):  # noqa: ANN201 - a SimulationResult
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


def write_trace(result: PipelineResult, path: str | os.PathLike[str], *, force: bool = False) -> Path:
    """The median step as a Chrome trace: one process per stage, compute and recv-wait lanes."""
    import json

    from hone.paths import ensure_writable

    target = ensure_writable(path, force=force)
    lanes = {"compute": 0, "recv_wait": 1, "optimizer": 0}
    events: list[dict[str, object]] = []
    for rank, timeline in enumerate(result.timeline):
        events.append({"name": "process_name", "ph": "M", "pid": rank, "args": {"name": f"stage {rank}"}})
        events.append({"name": "thread_name", "ph": "M", "pid": rank, "tid": 0, "args": {"name": "compute"}})
        events.append(
            {"name": "thread_name", "ph": "M", "pid": rank, "tid": 1, "args": {"name": "recv wait"}}
        )
        for event in timeline:
            events.append(
                {
                    "name": event.name,
                    "cat": event.category,
                    "ph": "X",
                    "pid": rank,
                    "tid": lanes[event.category],
                    "ts": 1000 * event.start_ms,
                    "dur": 1000 * (event.end_ms - event.start_ms),
                }
            )
    payload = {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "model": result.model,
            "schedule": result.schedule,
            "mode": result.mode,
            "stages": len(result.stages),
            "microbatches": result.microbatches,
            "step_ms": result.step_ms,
            "bubble_measured": result.bubble_measured,
            "bubble_formula": result.bubble_formula,
        },
    }
    target.write_text(json.dumps(payload), encoding="utf-8")
    return target


__all__ = ["PipelineResult", "StagePlan", "StageResult", "launch", "run_pipeline", "write_trace"]
