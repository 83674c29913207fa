"""What one stage process runs: its blocks, the schedule's actions, and a record of every wait.

The actions come from ``hone.pipeline.schedule``, the same lists the simulator replays. Sends are
asynchronous (``isend``; a stage never waits for its consumer), receives are posted one action
ahead and waited for when the action needs them, so a stage's timeline splits into compute, recv
wait (its input had not arrived) and the rest. That split is why hone runs the schedule itself
instead of through ``torch.distributed.pipelining``'s ScheduleGPipe/Schedule1F1B: those run the
same orders but do not say how long each action computed or waited, and the measured bubble needs
exactly that. The stages are a manual split (the issue measured tracer-built stages 1.8x slower).

Activation memory is measured, not estimated: a saved-tensors hook adds up the bytes autograd keeps
for each micro-batch (parameters excluded) from its forward until its backward frees them.

Any exception is reported to the parent (stage, step, action) before the process exits; its peers
then fail fast on the closed connection or, at worst, on the process group's timeout.
"""

from __future__ import annotations

import logging
import os
import re
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np

from hone.pipeline.types import Backend, Mode, Schedule, TimelineEvent

logger = logging.getLogger(__name__)

TAG_FORWARD, TAG_BACKWARD = 0, 1
LINK_PINGS = 20
LINK_TRANSFERS = 3


@dataclass
class StageProgram:
    """Everything one stage process needs; pickled to it by the parent (or broadcast by rank 0)."""

    rank: int
    world_size: int
    init_method: str  # "tcp://127.0.0.1:PORT", or "env://" under torchrun
    backend: Backend
    timeout_s: float
    threads: int
    mode: Mode
    schedule: Schedule
    microbatches: int
    steps: int  # steps run; the first is also the one compared with the single process
    block_range: tuple[int, int]  # inclusive, into the module's blocks (torch sources)
    recv_shape: tuple[int, ...] | None  # the activation this stage receives, per micro-batch
    send_shape: tuple[int, ...] | None  # the activation it sends on
    recv_dtype: str = "float32"  # torch dtype names
    send_dtype: str = "float32"
    factory: Callable[[], Any] | None = None
    weights_path: str | None = None
    onnx_stage: bytes | None = None  # ONNX sources: this stage's model
    data_path: str | None = None  # inputs (first stage) and targets (last stage), per micro-batch
    learning_rate: float = 0.01
    probe_link: bool = True
    cpus: tuple[int, ...] | None = None  # pin the process to these CPUs (spawned stages on one host)


@dataclass
class StepRecord:
    step_ms: float  # this stage, from the barrier to its last action (sends completed)
    compute_ms: float
    recv_wait_ms: float
    optimizer_ms: float
    events: list[TimelineEvent] = field(default_factory=list)


@dataclass
class StageReport:
    rank: int
    steps: list[StepRecord]
    peak_in_flight: int  # micro-batches whose activations were held at once
    peak_activation_bytes: int
    link_latency_ms: float | None = None  # to the next stage, measured before the steps
    link_bandwidth_gbps: float | None = None
    outputs: list[np.ndarray] | None = None  # last stage, first step
    losses: list[float] | None = None  # last stage, training, first step
    gradients: dict[str, np.ndarray] | None = None  # training, first step, by parameter name


@dataclass
class StageFailure:
    rank: int
    where: str
    error: str  # "TypeName: message"
    peer_failure: bool  # it failed because another stage went away


def stage_main(program: StageProgram, results: Any) -> None:
    """Entry point of a spawned stage process: run, and put a StageReport or StageFailure."""
    where = "start-up"
    try:
        runner = _StageRunner(program)
        where = "connecting to the other stages"
        runner.connect()
        report = runner.run(lambda text: _set(text))
        results.put(report)
        runner.close()
    except BaseException as exc:  # noqa: BLE001 - report everything, then exit non-zero
        where = _where[0] or where
        # gloo prefixes its messages with its source location: "[/path/gloo/...cc:78] Timed out ..."
        message = re.sub(r"^\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", " ".join(str(exc).split()))
        text = f"{type(exc).__name__}: {message[:500]}"
        logger.debug("stage %d failed:\n%s", program.rank, traceback.format_exc())
        results.put(StageFailure(program.rank, where, text, _is_peer_failure(text)))
        results.close()
        results.join_thread()  # the report must leave before the process does
        os._exit(1)


def run_connected_stage(program: StageProgram) -> StageReport:
    """Run one stage in a process whose process group is already up (torchrun)."""
    runner = _StageRunner(program)
    return runner.run(_set)


_where: list[str | None] = [None]


def _set(text: str) -> None:
    _where[0] = text


def _is_peer_failure(text: str) -> bool:
    lowered = text.lower()
    return any(
        hint in lowered
        for hint in ("connection closed", "connection reset", "broken pipe", "timed out", "timeout", "peer")
    )


class _StageRunner:
    def __init__(self, program: StageProgram) -> None:
        import torch

        self.program = program
        self.rank = program.rank
        self.last = program.world_size - 1
        if program.cpus and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, program.cpus)
        torch.set_num_threads(program.threads)
        self.device = torch.device("cpu")
        if program.backend == "nccl":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", program.rank)))
            torch.cuda.set_device(self.device)
        self.stage = self._build_stage()
        self.train = program.mode == "train"
        self.optimizer = None
        if self.train and self.stage is not None:
            self.stage.train()
            self.optimizer = torch.optim.SGD(self.stage.parameters(), lr=program.learning_rate)
        data = torch.load(program.data_path, weights_only=True) if program.data_path else {}
        # ONNX first stages take a dict of feeds per micro-batch (they run on the CPU).
        self.inputs = [t if isinstance(t, dict) else t.to(self.device) for t in data.get("inputs", [])]
        self.targets = [t.to(self.device) for t in data.get("targets", [])]

    def _build_stage(self) -> Any:
        import torch

        from hone.pipeline.blocks import torch_blocks

        program = self.program
        if program.onnx_stage is not None:
            return _OnnxStage(program.onnx_stage, program.threads)
        assert program.factory is not None and program.weights_path is not None
        module = program.factory()
        state = torch.load(program.weights_path, weights_only=True)
        module.load_state_dict(state)
        first, last = program.block_range
        blocks = torch_blocks(module)[first : last + 1]
        stage = torch.nn.Sequential(*(block for _, block in blocks)).to(self.device)
        stage.train(program.mode == "train")
        self.parameter_names = {id(p): name for name, p in module.named_parameters()}
        return stage

    def connect(self) -> None:
        import torch.distributed as dist

        program = self.program
        dist.init_process_group(
            program.backend,
            init_method=program.init_method,
            rank=program.rank,
            world_size=program.world_size,
            timeout=timedelta(seconds=program.timeout_s),
        )

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    def run(self, at: Callable[[str], None]) -> StageReport:
        import torch.distributed as dist

        from hone.pipeline import schedule as schedules

        program = self.program
        report = StageReport(self.rank, [], 0, 0)
        if program.probe_link and program.world_size > 1:
            at("measuring the link")
            report.link_latency_ms, report.link_bandwidth_gbps = self._probe_links()
        order = schedules.build(program.schedule, program.mode, program.world_size, program.microbatches)[
            self.rank
        ]
        for step in range(program.steps):
            at(f"step {step}, waiting for the other stages")
            dist.barrier()
            record = self._step(order, step, report, at)
            report.steps.append(record)
        at("finishing")
        dist.barrier()
        return report

    # One step ------------------------------------------------------------------------------------

    def _step(
        self, order: list[Any], step: int, report: StageReport, at: Callable[[str], None]
    ) -> StepRecord:
        import torch
        import torch.distributed as dist

        first_step = step == 0
        rank, last = self.rank, self.last
        if self.optimizer is not None:
            # Zeroed in place, not freed: re-allocating every gradient in each step's first
            # backward would be charged to the pipeline as compute.
            self.optimizer.zero_grad(set_to_none=False)
        events: list[TimelineEvent] = []
        posted: dict[tuple[int, int], tuple[Any, torch.Tensor]] = {}
        sends: list[Any] = []
        held: dict[int, tuple[torch.Tensor, torch.Tensor, int]] = {}  # mb -> (input, output or loss, bytes)
        outputs: list[np.ndarray] = []
        losses: list[float] = []
        held_bytes = 0
        start = time.perf_counter()

        def now_ms() -> float:
            return 1000 * (time.perf_counter() - start)

        def needs_recv(action: Any) -> tuple[int, int] | None:
            if action.kind == "F" and rank > 0:
                return (TAG_FORWARD, action.microbatch)
            if action.kind == "B" and rank < last:
                return (TAG_BACKWARD, action.microbatch)
            return None

        def post(key: tuple[int, int]) -> None:
            if key in posted:
                return
            kind, mb = key
            source = rank - 1 if kind == TAG_FORWARD else rank + 1
            if kind == TAG_FORWARD:
                shape, dtype = self.program.recv_shape, self.program.recv_dtype
            else:
                shape, dtype = self.program.send_shape, self.program.send_dtype
            buffer = torch.empty(shape, dtype=getattr(torch, dtype), device=self.device)
            posted[key] = (dist.irecv(buffer, source, tag=2 * mb + kind), buffer)

        def receive(key: tuple[int, int], label: str) -> torch.Tensor:
            post(key)
            work, buffer = posted.pop(key)
            began = now_ms()
            work.wait(timedelta(seconds=self.program.timeout_s))
            events.append(TimelineEvent(f"recv {label}", "recv_wait", began, now_ms()))
            return buffer

        def prefetch(index: int) -> None:
            """Post the next receive of each direction after ``index`` so it lands during compute."""
            wanted = set()
            for action in order[index + 1 :]:
                key = needs_recv(action)
                if key is not None and key[0] not in wanted:
                    wanted.add(key[0])
                    post(key)
                if len(wanted) == 2:
                    break

        for index, action in enumerate(order):
            mb = action.microbatch
            label = str(action)
            at(f"step {step}, {label}")
            key = needs_recv(action)
            if action.kind == "F":
                x = receive(key, label) if key else self.inputs[mb]
                prefetch(index)
                began = now_ms()
                if self.train:
                    if rank > 0:
                        x.requires_grad_(True)
                    saved = _SavedBytes(self.stage)
                    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
                        y = self.stage(x)
                        if rank == last:
                            y = torch.nn.functional.mse_loss(y, self.targets[mb]) / self.program.microbatches
                    held[mb] = (x, y, saved.total)
                    held_bytes += saved.total
                    report.peak_activation_bytes = max(report.peak_activation_bytes, held_bytes)
                    report.peak_in_flight = max(report.peak_in_flight, len(held))
                    if rank == last and first_step:
                        losses.append(float(y.detach()))
                else:
                    with torch.no_grad():
                        y = self.stage(x)
                    report.peak_in_flight = max(report.peak_in_flight, 1)
                    activation = _tensor_bytes(x) + _tensor_bytes(y)
                    report.peak_activation_bytes = max(report.peak_activation_bytes, activation)
                    if rank == last and first_step:
                        outputs.append(y.detach().cpu().numpy())
                self._sync()
                if rank < last:
                    sends.append(dist.isend(y.detach().contiguous(), rank + 1, tag=2 * mb + TAG_FORWARD))
                events.append(TimelineEvent(label, "compute", began, now_ms()))
            else:
                gradient = receive(key, label) if key else None
                prefetch(index)
                began = now_ms()
                x, y, size = held.pop(mb)
                held_bytes -= size
                if gradient is None:
                    y.backward()
                else:
                    torch.autograd.backward(y, gradient)
                self._sync()
                if rank > 0:
                    sends.append(dist.isend(x.grad.contiguous(), rank - 1, tag=2 * mb + TAG_BACKWARD))
                events.append(TimelineEvent(label, "compute", began, now_ms()))
        at(f"step {step}, waiting for sends to complete")
        for work in sends:
            work.wait(timedelta(seconds=self.program.timeout_s))
        step_ms = now_ms()
        optimizer_ms = 0.0
        if self.train and self.optimizer is not None:
            if first_step:
                report.gradients = {
                    self.parameter_names.get(id(p), f"param{i}"): p.grad.detach().cpu().numpy().copy()
                    for i, p in enumerate(self.stage.parameters())
                    if p.grad is not None
                }
            began = now_ms()
            self.optimizer.step()
            self._sync()
            optimizer_ms = now_ms() - began
            events.append(TimelineEvent("optimizer", "optimizer", began, began + optimizer_ms))
        if first_step:
            report.outputs = outputs or report.outputs
            report.losses = losses or report.losses
        compute = sum(e.end_ms - e.start_ms for e in events if e.category == "compute")
        waiting = sum(e.end_ms - e.start_ms for e in events if e.category == "recv_wait")
        return StepRecord(step_ms, compute, waiting, optimizer_ms, events)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)

    # The link --------------------------------------------------------------------------------------

    def _probe_links(self) -> tuple[float | None, float | None]:
        """Latency and bandwidth to the next stage: small ping-pongs, then activation-sized sends."""
        import torch
        import torch.distributed as dist

        measured: tuple[float | None, float | None] = (None, None)
        size = int(np.prod(self.program.send_shape)) if self.program.send_shape else 1
        for left in range(self.program.world_size - 1):
            dist.barrier()
            if self.rank not in (left, left + 1):
                continue
            peer = left + 1 if self.rank == left else left
            small = torch.zeros(1, device=self.device)
            recv_shape = self.program.recv_shape
            big_size = size if self.rank == left else int(np.prod(recv_shape)) if recv_shape else 1
            big = torch.zeros(big_size, device=self.device)
            leading = self.rank == left

            def exchange(
                outgoing: torch.Tensor,
                incoming: torch.Tensor,
                leading: bool = leading,
                peer: int = peer,
                small: torch.Tensor = small,
            ) -> float:
                """One round trip: the left rank sends ``outgoing`` and gets ``small`` back."""
                began = time.perf_counter()
                if leading:
                    dist.send(outgoing, peer)
                    dist.recv(small, peer)
                else:
                    dist.recv(incoming, peer)
                    dist.send(small, peer)
                return time.perf_counter() - began

            round_trips = [exchange(small, small) for _ in range(LINK_PINGS)]
            transfers = [exchange(big, big) for _ in range(LINK_TRANSFERS)]
            if self.rank == left:
                round_trip = statistics.median(round_trips)
                transfer = max(statistics.median(transfers) - round_trip, 1e-9)
                measured = (1000 * round_trip / 2, big.numel() * big.element_size() / transfer / 1e9)
        return measured


def _tensor_bytes(value: Any) -> int:
    """Bytes of a tensor, or of a dict of them (an ONNX first stage's feeds)."""
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    return value.numel() * value.element_size()


class _SavedBytes:
    """Adds up the storage bytes autograd saves during one forward, parameters excluded."""

    def __init__(self, stage: Any) -> None:
        self.skip = {p.untyped_storage().data_ptr() for p in stage.parameters()}
        self.total = 0

    def pack(self, tensor: Any) -> Any:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in self.skip:
            self.skip.add(pointer)
            self.total += storage.nbytes()
        return tensor


class _OnnxStage:
    """An ONNX stage behind the torch interface the runner uses (inference only)."""

    def __init__(self, model_bytes: bytes, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: Any) -> Any:
        """The stage's first output for a boundary tensor, or for the graph's feeds (first stage)."""
        import torch

        if isinstance(x, dict):
            feeds = {name: value.numpy() for name, value in x.items()}
        else:
            feeds = {self.input_name: x.detach().cpu().numpy()}
        output = self.session.run(None, feeds)[0]
        return torch.from_numpy(np.ascontiguousarray(output))

    def parameters(self) -> list[Any]:
        return []

    def train(self, mode: bool = True) -> _OnnxStage:
        return self
