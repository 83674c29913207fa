"""Measured ceilings of this machine: peak GEMM rate and memory bandwidth, cached with the date.

Both are measured, never taken from a spec sheet, with the same execution path the profiler uses
(onnxruntime, same thread count):

- ``gemm_gflops``: the best rate of a square fp32 MatMul in onnxruntime over a few sizes
  (2*N^3 FLOPs per run, fastest of several runs), the roof for compute-bound nodes.
- ``memory_gbps``: the best rate of streaming a large array (far larger than the caches)
  through onnxruntime's Add with a scalar and through numpy's copy, counted as bytes read + bytes
  written, the roof for memory-bound nodes.

A roof is what the machine can do at best, so each figure is the fastest run, not the median.

The result is cached per (CPU, thread count) in the hone cache; ``hone machine --remeasure``
measures again.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from hone.errors import OptionError
from hone.paths import cache_dir
from hone.runtime import default_threads

logger = logging.getLogger(__name__)

GEMM_SIZES = (512, 1024, 2048)
STREAM_BYTES = 256 * 1024 * 1024  # per array: far beyond any last-level cache
_REPEATS = 7
_PASSES = 2


@dataclass
class MachineCeilings:
    gemm_gflops: float
    memory_gbps: float
    threads: int
    cpu: str
    measured_at: str  # ISO date and time of the measurement (UTC)
    gemm_size: int  # N of the N x N x N MatMul that reached the peak
    method: str


def ceilings(threads: int | None = None, *, remeasure: bool = False) -> MachineCeilings:
    """The cached ceilings for this CPU and thread count, measuring them on first use."""
    from hone.bench.sweep import machine_summary

    if threads is not None and threads < 1:
        raise OptionError(f"--threads must be at least 1, got {threads}")
    threads = threads or default_threads()
    cpu = machine_summary()["cpu"]
    path = _cache_path(cpu, threads)
    if path.exists() and not remeasure:
        try:
            return MachineCeilings(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            logger.warning("ignoring unreadable machine cache %s", path)
    measured = measure(threads, cpu=cpu)
    path.write_text(json.dumps(asdict(measured), indent=2))
    return measured


def measure(threads: int, *, cpu: str = "") -> MachineCeilings:
    gemm_gflops, gemm_size = _best_gemm(threads)
    memory_gbps = _stream_bandwidth(threads)
    return MachineCeilings(
        gemm_gflops=gemm_gflops,
        memory_gbps=memory_gbps,
        threads=threads,
        cpu=cpu or platform.machine(),
        measured_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        gemm_size=gemm_size,
        method=(
            f"onnxruntime fp32 MatMul N in {list(GEMM_SIZES)} (fastest of {_REPEATS} runs); "
            f"stream {STREAM_BYTES // 2**20} MiB via onnxruntime Add and numpy copy, read+write bytes"
        ),
    )


def _session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _best_seconds(work: Callable[[], object], repeats: int = _REPEATS) -> float:
    work()  # warm-up
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        work()
        times.append(time.perf_counter() - began)
    return min(times)


def _best_gemm(threads: int) -> tuple[float, int]:
    best = (0.0, GEMM_SIZES[0])
    # Two interleaved passes over the sizes, so that a burst of noise on a shared machine does
    # not set the roof for one size.
    for size in GEMM_SIZES * _PASSES:
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["a", "b"], ["c"])],
            "gemm",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in ("a", "b")],
            [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])],
        )
        session = _session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), threads)
        rng = np.random.default_rng(0)
        feeds = {n: rng.standard_normal((size, size), dtype=np.float32) for n in ("a", "b")}
        seconds = _best_seconds(functools.partial(session.run, None, feeds))
        gflops = 2.0 * size**3 / seconds / 1e9
        logger.info("GEMM %d: %.1f GFLOP/s", size, gflops)
        if gflops > best[0]:
            best = (gflops, size)
    return best


def _stream_bandwidth(threads: int) -> float:
    count = STREAM_BYTES // 4
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "zero"], ["y"])],
        "stream",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [count])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [count])],
        [helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])],
    )
    session = _session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), threads)
    source = np.ones(count, dtype=np.float32)
    target = np.empty_like(source)
    ort_seconds = _best_seconds(lambda: session.run(None, {"x": source}), repeats=5)
    copy_seconds = _best_seconds(lambda: np.copyto(target, source), repeats=5)
    moved = 2.0 * STREAM_BYTES  # read once + written once
    return max(moved / ort_seconds, moved / copy_seconds) / 1e9


def _cache_path(cpu: str, threads: int) -> Path:
    slug = "".join(ch if ch.isalnum() else "-" for ch in cpu).strip("-").lower()[:60] or "cpu"
    folder = cache_dir() / "machine"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{slug}-{platform.node() or 'host'}-t{threads}.json"
