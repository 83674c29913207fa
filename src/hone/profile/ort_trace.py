"""Per-node time from onnxruntime's own profiler, aggregated over many runs after warm-up.

onnxruntime writes a Chrome-trace JSON with one ``Node`` event per executed kernel per run
(``<node name>_kernel_time``, with ``op_name`` and ``provider`` in its args) and one ``Session``
event ``model_run`` per run. We keep the median per executed node across the measured runs and
the median run time; what the runs spend outside every node (scheduling, copies between
provider-less steps, session overhead) is the difference, reported as its own row.

The optimized graph that onnxruntime actually ran is saved next to the profile (it may hold
fused nodes such as FusedConv or NCHWc Conv); ``hone.profile.attribute`` maps it back to the
nodes of the model the user gave.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from hone.data import check_batchable
from hone.data import feeds as sample_feeds
from hone.model import Model
from hone.runtime import Session, SessionConfig, default_threads

logger = logging.getLogger(__name__)

# One event of onnxruntime's Chrome-trace JSON, as json.loads reads it.
TraceEvent = dict[str, Any]

_KERNEL_SUFFIX = "_kernel_time"
# Bytes per element of the type names onnxruntime writes in input_type_shape/output_type_shape.
_DTYPE_BYTES = {
    "float": 4,
    "float16": 2,
    "bfloat16": 2,
    "double": 8,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint8": 1,
    "uint16": 2,
    "uint32": 4,
    "uint64": 8,
    "bool": 1,
}


@dataclass
class ExecutedNode:
    """One node as onnxruntime executed it (possibly a fusion of several of the user's nodes)."""

    name: str
    op_type: str
    provider: str
    time_ms: float  # median over the measured runs
    times_ms: list[float]
    input_shapes: list[list[int]]
    output_shapes: list[list[int]]
    # Minimum bytes of the kernel as it ran: every input read once, every output written once.
    # onnxruntime leaves prepacked weights (e.g. Gemm's B) out of its shapes; see weight_bytes.
    bytes_moved: int
    weight_bytes: int  # onnxruntime's parameter_size: the initializers it reports for the kernel
    order: int  # position in the first measured run


@dataclass
class RawProfile:
    runs: int
    warmup_runs: int
    run_ms: float  # median wall time of model_run, at least nodes_ms
    nodes_ms: float  # sum of the per-node medians
    executed: list[ExecutedNode]
    optimized_graph: onnx.ModelProto | None
    trace_events: list[TraceEvent] = field(default_factory=list)

    @property
    def outside_nodes_ms(self) -> float:
        return max(self.run_ms - self.nodes_ms, 0.0)


def collect(
    model: Model,
    *,
    batch: int = 1,
    threads: int | None = None,
    provider: str = "cpu",
    optimization: str = "all",
    runs: int = 20,
    warmup_runs: int = 3,
    seed: int = 0,
) -> RawProfile:
    """Run ``model`` under onnxruntime's profiler and aggregate per-node times."""
    check_batchable(model.inputs, batch)
    folder = Path(tempfile.mkdtemp(prefix="hone-profile-"))
    optimized_path = folder / "optimized.onnx"
    feeds = sample_feeds(model, batch=batch, seed=seed)
    config = SessionConfig(provider=provider, threads=threads or default_threads(), optimization=optimization)
    # Warm-up in a session without profiling (it also saves the graph onnxruntime runs), so that
    # one-time costs stay out of the profile.
    warm = Session(model, replace(config, optimized_model_path=str(optimized_path)))
    for _ in range(warmup_runs):
        warm.run(feeds)
    del warm
    session = Session(model, replace(config, profile_prefix=str(folder / "ort")))
    for _ in range(warmup_runs + runs):
        session.run(feeds)
    profile_file = session.end_profiling()
    events = json.loads(Path(profile_file).read_text())
    # Only the graph structure is needed for attribution, not the (possibly large) weights.
    optimized = onnx.load(str(optimized_path), load_external_data=False) if optimized_path.exists() else None
    if optimized is not None:
        for tensor in optimized.graph.initializer:
            tensor.ClearField("raw_data")
    shutil.rmtree(folder, ignore_errors=True)
    return _aggregate(events, warmup_runs=warmup_runs, runs=runs, optimized=optimized)


def _aggregate(
    events: list[TraceEvent],
    *,
    warmup_runs: int,
    runs: int,
    optimized: onnx.ModelProto | None,
) -> RawProfile:
    run_events = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: float(e["ts"]),
    )
    measured = run_events[-runs:] if runs else run_events
    node_events = [
        e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith(_KERNEL_SUFFIX)
    ]
    per_node: dict[str, list[float]] = defaultdict(list)
    info: dict[str, dict[str, Any]] = {}
    order: dict[str, int] = {}
    kept_events: list[TraceEvent] = []
    for run in measured:
        start = float(run["ts"])
        end = start + float(run["dur"])
        inside = [e for e in node_events if start <= float(e["ts"]) <= end]
        for event in inside:
            name = str(event["name"])[: -len(_KERNEL_SUFFIX)]
            duration_ms = float(event["dur"]) / 1000.0
            per_node[name].append(duration_ms)
            if name not in info:
                info[name] = event.get("args", {})
                order[name] = len(order)
        if run is measured[-1]:
            kept_events = [run, *inside]
    executed = []
    for name, times in per_node.items():
        args = info[name]
        executed.append(
            ExecutedNode(
                name=name,
                op_type=str(args.get("op_name", "?")),
                provider=str(args.get("provider", "?")),
                time_ms=float(np.median(times)),
                times_ms=times,
                input_shapes=_shapes(args.get("input_type_shape")),
                output_shapes=_shapes(args.get("output_type_shape")),
                bytes_moved=_bytes(args.get("input_type_shape")) + _bytes(args.get("output_type_shape")),
                weight_bytes=int(str(args.get("parameter_size", "0")) or 0),
                order=order[name],
            )
        )
    executed.sort(key=lambda node: node.order)
    run_ms = float(np.median([float(r["dur"]) / 1000.0 for r in measured])) if measured else 0.0
    # Rows are per-node medians, so the run total is reconciled to their sum: the time outside
    # nodes is what the median run holds beyond them (never negative).
    nodes_ms = sum(node.time_ms for node in executed)
    return RawProfile(
        runs=len(measured),
        warmup_runs=warmup_runs,
        run_ms=max(run_ms, nodes_ms),
        nodes_ms=nodes_ms,
        executed=executed,
        optimized_graph=optimized,
        trace_events=kept_events,
    )


def _shapes(raw: object) -> list[list[int]]:
    shapes: list[list[int]] = []
    if isinstance(raw, list):
        for entry in raw:
            if isinstance(entry, dict):
                for dims in entry.values():
                    shapes.append([int(d) for d in dims])
    return shapes


def _bytes(raw: object) -> int:
    total = 0
    if isinstance(raw, list):
        for entry in raw:
            if isinstance(entry, dict):
                for dtype, dims in entry.items():
                    count = 1
                    for dim in dims:
                        count *= int(dim)
                    total += count * _DTYPE_BYTES.get(dtype, 4)
    return total
