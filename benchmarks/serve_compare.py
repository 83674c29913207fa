"""hone serve against Triton 2.51 through PyTriton (Python backend), hone without batching and Ray Serve, loaded by perf_analyzer.

Run: .venv/bin/python benchmarks/serve_compare.py [--models relu,resnet18,minilm]
     [--systems hone-http,hone-grpc,hone-nobatch-http,triton-http,triton-grpc,ray-http]
     [--concurrency 1,8,32] [--window-ms 2000] [--trials 3]

Needs: `make perf-analyzer` (perf_analyzer), `make pytriton` (Triton through PyTriton), `make ray`
(Ray Serve) and `unshare` (root) for Ray, which binds every interface: its server and its load run
in a network namespace that has only loopback, from a second run of this script (``--ray-only``).

Workloads (batch 1 per request; the servers batch):
- ``relu``: y = relu(x[b, 512] @ W[512, 2048]), float32, W fixed (seed 0): the server's own cost
  dominates (0.1 ms of compute per sample).
- ``resnet18`` (zoo, seeded weights, [b, 3, 224, 224]) and ``minilm`` (zoo, real weights; token ids
  of real sentences padded to 128): compute dominates.

Systems, each serving the same .onnx in onnxruntime (CPU, 2 intra-op threads), max batch 32 and a
2 ms queue delay wherever there is a batcher:
- ``hone-http``/``hone-grpc``: ``hone serve`` (one server, both protocols);
- ``hone-nobatch-http``: ``hone serve --max-batch-size 0``;
- ``triton-http``/``triton-grpc``: Triton 2.51 as PyTriton 0.7 bundles it, its dynamic batcher, the
  model run by onnxruntime in PyTriton's Python callable, i.e. Triton's Python backend
  (benchmarks/servelib/pytriton_server.py). This is not Triton's native onnxruntime backend (C++,
  which would run the model without Python), which is not on PyPI: the baseline is named
  "Triton (PyTriton, Python backend)" wherever its numbers are shown;
- ``ray-http``: Ray Serve with ``@serve.batch`` over hone's model runner (hone.serve.ray_serve),
  1 replica.

Load: perf_analyzer (Triton's own load generator) at each concurrency, ``--trials`` windows of
``--window-ms``, random inputs (token ids from real sentences for minilm). The machine has 2 cores
shared by the server and perf_analyzer, for every system alike. The direct row is
``session.run`` at batch 1 in this process, no server (the floor for concurrency 1).

Goals (issue 6): at concurrency 32, hone's throughput >= 1.2x Triton's with p99 no worse, and >= 5x
hone without batching; at concurrency 1, hone's p50 within 1 ms of the direct session.

Prints tables and writes benchmarks/results/serve-compare-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console
from rich.table import Table
from servelib.perf_analyzer import PerfAnalyzerError, run_perf_analyzer
from servelib.servers import Running, ServerError, hone_server, pytriton_server, ray_server

from hone.bench.sweep import machine_summary
from hone.data import synthesize
from hone.results import write_json
from hone.runtime import Session, SessionConfig
from hone.serve.model_runner import ModelRunner
from hone.serve.slo import measure_curve
from hone.sources import load

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("relu", "resnet18", "minilm")
SYSTEMS = ("hone-http", "hone-grpc", "hone-nobatch-http", "triton-http", "triton-grpc", "ray-http")
CONCURRENCY = (1, 8, 32)
THREADS = 2
MAX_BATCH = 32
QUEUE_DELAY_MS = 2.0
DIRECT_RUNS = 200
SEQUENCE = 128
console = Console()


@dataclass
class Workload:
    """One model as every system serves it, and what perf_analyzer needs to load it."""

    name: str
    path: Path
    sample_shapes: dict[str, list[int]]  # per request, without the batch dim
    data_files: dict[bool, Path | None] = field(default_factory=dict)  # batch dim in data -> file
    direct_p50_ms: float = float("nan")
    # Samples/s of session.run at each batch size (hone.serve.slo's curve): what batching can give.
    batch_curve: dict[int, float] = field(default_factory=dict)


@dataclass
class Measurement:
    model: str
    system: str
    concurrency: int
    throughput_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    requests: int | None = None
    # From the server's own statistics (Triton's extension; hone and Triton have it, Ray not):
    # per request, the average time queued and computing (input + infer + output) during the run.
    server_queue_ms: float | None = None
    server_compute_ms: float | None = None
    error: str | None = None


def main() -> int:
    args = parse_args()
    folder = Path(tempfile.mkdtemp(prefix="hone-serve-compare-"))
    workloads = [prepare(name, folder) for name in args.models]
    if args.ray_only:
        rows = [m for w in workloads for m in measure_system(w, "ray-http", args, folder)]
        Path(args.json).write_text(json.dumps([asdict(row) for row in rows]))
        return 0
    for workload in workloads:
        workload.direct_p50_ms = direct_p50_ms(workload)
        workload.batch_curve = batch_curve(workload)
    rows: list[Measurement] = []
    for workload in workloads:
        for system in [s for s in args.systems if s != "ray-http"]:
            if system == "hone-grpc" and "hone-http" in args.systems:
                continue  # measured with hone-http, on the same server
            if system == "triton-grpc" and "triton-http" in args.systems:
                continue
            rows += measure_system(workload, system, args, folder)
    if "ray-http" in args.systems:
        rows += measure_ray_in_namespace(args, folder)
    goals = evaluate(workloads, rows)
    show(workloads, rows, goals, args)
    result = {
        "benchmark": "serve-compare",
        "date": dt.date.today().isoformat(),
        "machine": machine_summary(),
        "settings": {
            "threads": THREADS,
            "max_batch_size": MAX_BATCH,
            "max_queue_delay_ms": QUEUE_DELAY_MS,
            "window_ms": args.window_ms,
            "trials": args.trials,
            "concurrency": args.concurrency,
        },
        "direct_p50_ms": {w.name: w.direct_p50_ms for w in workloads},
        "batch_curve_samples_per_s": {w.name: w.batch_curve for w in workloads},
        "measurements": [asdict(row) for row in rows],
        "goals": goals,
    }
    out = ROOT / "benchmarks" / "results" / f"serve-compare-{dt.date.today().isoformat()}.json"
    write_json(result, args.json or out, force=True)
    console.print(f"wrote {args.json or out}")
    shutil.rmtree(folder, ignore_errors=True)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=_names(MODELS), default=list(MODELS))
    parser.add_argument("--systems", type=_names(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--concurrency", type=lambda t: [int(c) for c in t.split(",")], default=list(CONCURRENCY))
    parser.add_argument("--window-ms", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--json", help="where to write the result (default benchmarks/results/...)")
    parser.add_argument("--ray-only", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def _names(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {','.join(allowed)}")
        return names

    return parse


# -- workloads -----------------------------------------------------------------------------------


def prepare(name: str, folder: Path) -> Workload:
    path = folder / f"{name}.onnx"
    if name == "relu":
        save_relu(path)
        workload = Workload(name, path, {"x": [512]})
    else:
        model = load(name)
        model.save(path, force=True)
        shapes = {spec.name: [SEQUENCE if d is None or isinstance(d, str) else d for d in spec.shape[1:]]
                  for spec in model.inputs}
        workload = Workload(name, path, shapes)
    if name == "minilm":
        from hone.zoo.minilm import CALIBRATION_SENTENCES

        tokens = padded_tokens(CALIBRATION_SENTENCES)
        for with_batch in (False, True):
            rows = [
                {
                    key: {"content": value[i].tolist(), "shape": ([1] if with_batch else []) + [SEQUENCE]}
                    for key, value in tokens.items()
                }
                for i in range(len(CALIBRATION_SENTENCES))
            ]
            data = folder / f"minilm-data-{with_batch}.json"
            data.write_text(json.dumps({"data": rows}))
            workload.data_files[with_batch] = data
    return workload


def padded_tokens(sentences: tuple[str, ...]) -> dict[str, np.ndarray]:
    """minilm's token ids, masks and type ids of real sentences, padded (with 0) to SEQUENCE."""
    from hone.zoo.minilm import tokenize

    tokens = tokenize(sentences, max_length=SEQUENCE)
    return {key: np.pad(value, ((0, 0), (0, SEQUENCE - value.shape[1]))) for key, value in tokens.items()}


def save_relu(path: Path) -> None:
    weights = (np.random.default_rng(0).standard_normal((512, 2048)) / np.sqrt(512)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 512])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2048])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def direct_p50_ms(workload: Workload) -> float:
    """``session.run`` at batch 1, no server: what a request costs at the least."""
    model = load(str(workload.path))
    session = Session(model, SessionConfig(threads=THREADS, optimization="all"))
    if workload.name == "minilm":
        from hone.zoo.minilm import CALIBRATION_SENTENCES

        feeds = {k: v[:1] for k, v in padded_tokens(CALIBRATION_SENTENCES[:1]).items()}
    else:
        feeds = synthesize(model.inputs, batch=1, dims=model.default_dims)
    for _ in range(10):
        session.run(feeds)
    times = []
    for _ in range(DIRECT_RUNS):
        began = time.perf_counter()
        session.run(feeds)
        times.append((time.perf_counter() - began) * 1000)
    return float(np.median(times))


def batch_curve(workload: Workload) -> dict[int, float]:
    """Samples/s of one session at batch 1, 2, 4, ... 32: the most batching can give this model."""
    model = load(str(workload.path))
    runner = ModelRunner(model, workload.name, max_batch_size=MAX_BATCH, threads=THREADS)
    curve = measure_curve(runner, stop_above_ms=float("inf"), largest=MAX_BATCH)
    return {point.batch: point.samples_per_s for point in curve}


# -- measuring -----------------------------------------------------------------------------------


def measure_system(workload: Workload, system: str, args: argparse.Namespace, folder: Path) -> list[Measurement]:
    """Start the system's server, run perf_analyzer at each concurrency (and protocol), stop it."""
    log = folder / f"{workload.name}-{system}.log"
    protocols = {"hone-http": ["http", "grpc"], "triton-http": ["http", "grpc"]}.get(system)
    if protocols is None:
        protocols = [system.rsplit("-", 1)[1]]
    family = system.rsplit("-", 1)[0]
    labels = {protocol: f"{family}-{protocol}" for protocol in protocols}
    labels = {p: label for p, label in labels.items() if label in args.systems or args.ray_only}
    console.print(f"[bold]{workload.name}[/]: starting {family} ...")
    try:
        with start(family, workload, log) as server:
            batching = max_batch_size(server, workload.name) > 0
            rows = []
            for protocol, label in labels.items():
                for concurrency in args.concurrency:
                    rows.append(measure(workload, label, server, protocol, concurrency, batching, args))
            return rows
    except ServerError as exc:
        return [Measurement(workload.name, label, c, error=str(exc)) for label in labels.values() for c in args.concurrency]


def start(family: str, workload: Workload, log: Path) -> AbstractContextManager[Running]:
    knobs = ["--max-batch-size", str(MAX_BATCH), "--max-queue-delay-ms", str(QUEUE_DELAY_MS)]
    if family == "hone":
        return hone_server(workload.path, log, "--name", workload.name, *knobs)
    if family == "hone-nobatch":
        return hone_server(workload.path, log, "--name", workload.name, "--max-batch-size", "0")
    if family == "triton":
        return pytriton_server(
            workload.path, log, name=workload.name, max_batch_size=MAX_BATCH,
            max_queue_delay_us=int(QUEUE_DELAY_MS * 1000), threads=THREADS,
        )  # fmt: skip
    if family == "ray":
        return ray_server(workload.path, log, name=workload.name, replicas=1, max_batch_size=MAX_BATCH,
                          max_queue_delay_ms=QUEUE_DELAY_MS)  # fmt: skip
    raise ValueError(family)


def max_batch_size(server: Running, name: str) -> int:
    """The served model's max_batch_size, from its config (what perf_analyzer shapes requests by)."""
    with urllib.request.urlopen(f"http://{server.url('http')}/v2/models/{name}/config", timeout=30) as response:
        return int(json.load(response).get("max_batch_size", 0))


def measure(
    workload: Workload,
    label: str,
    server: Running,
    protocol: str,
    concurrency: int,
    batching: bool,
    args: argparse.Namespace,
) -> Measurement:
    # With batching off, the model's dims include the batch dim, so the shapes and data do too.
    shapes = {k: v if batching else [1, *v] for k, v in workload.sample_shapes.items()}
    data = workload.data_files.get(not batching)
    before = server_statistics(server, workload.name)
    try:
        result = run_perf_analyzer(
            workload.name,
            server.url(protocol),
            protocol,
            concurrency,
            shape=shapes,
            window_ms=args.window_ms,
            max_trials=args.trials,
            input_data=str(data) if data else "random",
            timeout_s=60 + 3 * args.trials * args.window_ms / 1000,
        )
    except (PerfAnalyzerError, ServerError) as exc:
        console.print(f"  {label} c={concurrency}: [red]{exc}[/]")
        return Measurement(workload.name, label, concurrency, error=str(exc))
    row = Measurement(
        workload.name,
        label,
        concurrency,
        throughput_per_s=result["throughput_infer_per_s"],
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        requests=result["requests"],
    )
    after = server_statistics(server, workload.name)
    if before is not None and after is not None and after[0] > before[0]:
        count = after[0] - before[0]
        row.server_queue_ms = (after[1] - before[1]) / count / 1e6
        row.server_compute_ms = (after[2] - before[2]) / count / 1e6
    server_side = (
        f" (server: queue {row.server_queue_ms:.2f} ms, compute {row.server_compute_ms:.2f} ms)"
        if row.server_compute_ms is not None
        else ""
    )
    console.print(
        f"  {label} c={concurrency}: {row.throughput_per_s:.0f}/s p50 {row.p50_ms:.2f} ms "
        f"p99 {row.p99_ms:.2f} ms{server_side}"
    )
    return row


def server_statistics(server: Running, name: str) -> tuple[int, int, int] | None:
    """(successful requests, queue ns, compute ns) so far, from GET .../stats; None without it."""
    try:
        url = f"http://{server.url('http')}/v2/models/{name}/stats"
        with urllib.request.urlopen(url, timeout=30) as response:
            stats = json.load(response)["model_stats"][0]["inference_stats"]
    except (OSError, KeyError, IndexError, ValueError):
        return None
    compute = sum(int(stats[key]["ns"]) for key in ("compute_input", "compute_infer", "compute_output"))
    return int(stats["success"]["count"]), int(stats["queue"]["ns"]), compute


def measure_ray_in_namespace(args: argparse.Namespace, folder: Path) -> list[Measurement]:
    """Ray binds every interface: run it and its load in a network namespace with only loopback."""
    out = folder / "ray.json"
    inner = [
        sys.executable, str(Path(__file__).resolve()), "--ray-only", "--json", str(out),
        "--models", ",".join(args.models), "--concurrency", ",".join(map(str, args.concurrency)),
        "--window-ms", str(args.window_ms), "--trials", str(args.trials),
    ]  # fmt: skip
    # --pid --fork --kill-child: nothing of Ray outlives the run, even on a timeout.
    command = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "sh", "-c",
               'ip link set lo up && exec "$@"', "sh", *inner]  # fmt: skip
    console.print("[bold]ray[/]: in a network namespace with only loopback ...")
    completed = subprocess.run(command, text=True, capture_output=True, timeout=1800)
    if completed.returncode != 0 or not out.exists():
        tail = " | ".join((completed.stderr or completed.stdout).strip().splitlines()[-3:])
        return [Measurement(m, "ray-http", c, error=f"ray run failed: {tail}") for m in args.models for c in args.concurrency]
    rows = [Measurement(**row) for row in json.loads(out.read_text())]
    for row in rows:
        if row.error is None:
            console.print(f"  ray-http {row.model} c={row.concurrency}: {row.throughput_per_s:.0f}/s p99 {row.p99_ms:.2f} ms")
    return rows


# -- goals and tables ----------------------------------------------------------------------------


def evaluate(workloads: list[Workload], rows: list[Measurement]) -> list[dict[str, Any]]:
    def find(model: str, system: str, concurrency: int) -> Measurement | None:
        return next(
            (r for r in rows if (r.model, r.system, r.concurrency) == (model, system, concurrency) and r.error is None),
            None,
        )

    goals: list[dict[str, Any]] = []
    top = max((r.concurrency for r in rows), default=32)
    for workload in workloads:
        for protocol in ("http", "grpc"):
            hone_row = find(workload.name, f"hone-{protocol}", top)
            triton = find(workload.name, f"triton-{protocol}", top)
            if hone_row and triton:
                ratio = hone_row.throughput_per_s / triton.throughput_per_s
                goals.append({
                    "model": workload.name, "goal": f"c={top} {protocol}: throughput >= 1.2x Triton, p99 no worse",
                    "value": f"{ratio:.2f}x, p99 {hone_row.p99_ms:.1f} vs {triton.p99_ms:.1f} ms",
                    "met": ratio >= 1.2 and hone_row.p99_ms <= triton.p99_ms,
                })  # fmt: skip
        hone_row, nobatch = find(workload.name, "hone-http", top), find(workload.name, "hone-nobatch-http", top)
        if hone_row and nobatch:
            ratio = hone_row.throughput_per_s / nobatch.throughput_per_s
            curve = workload.batch_curve
            ceiling = max(curve.values()) / curve[1] if curve.get(1) else float("nan")
            goals.append({
                "model": workload.name, "goal": f"c={top}: throughput >= 5x hone without batching",
                "value": f"{ratio:.2f}x (session alone: best batch {ceiling:.1f}x batch 1's samples/s)",
                "met": ratio >= 5,
            })  # fmt: skip
        for protocol in ("http", "grpc"):
            single = find(workload.name, f"hone-{protocol}", 1)
            if single:
                extra = single.p50_ms - workload.direct_p50_ms
                server_side = (
                    f"; server: queue {single.server_queue_ms:.2f} + compute {single.server_compute_ms:.2f} ms"
                    if single.server_compute_ms is not None
                    else ""
                )
                goals.append({
                    "model": workload.name, "goal": f"c=1 {protocol}: p50 within 1 ms of the direct session",
                    "value": f"+{extra:.2f} ms ({single.p50_ms:.2f} vs {workload.direct_p50_ms:.2f}{server_side})",
                    "met": extra <= 1.0,
                })  # fmt: skip
    return goals


def show(workloads: list[Workload], rows: list[Measurement], goals: list[dict[str, Any]], args: argparse.Namespace) -> None:
    for workload in workloads:
        table = Table(title=f"{workload.name}: perf_analyzer, batch 1 per request (direct session p50 {workload.direct_p50_ms:.2f} ms)")
        table.add_column("system")
        for concurrency in args.concurrency:
            table.add_column(f"c={concurrency} req/s", justify="right")
            table.add_column("p50 / p99 ms", justify="right")
        systems = sorted({r.system for r in rows if r.model == workload.name}, key=lambda s: SYSTEMS.index(s))
        for system in systems:
            cells = [system]
            for concurrency in args.concurrency:
                row = next((r for r in rows if (r.model, r.system, r.concurrency) == (workload.name, system, concurrency)), None)
                if row is None or row.error:
                    cells += ["error" if row else "-", ""]
                else:
                    cells += [f"{row.throughput_per_s:.0f}", f"{row.p50_ms:.2f} / {row.p99_ms:.2f}"]
            table.add_row(*cells)
        console.print(table)
    table = Table(title="goals")
    for column in ("model", "goal", "measured", "met"):
        table.add_column(column)
    for goal in goals:
        table.add_row(goal["model"], goal["goal"], goal["value"], "yes" if goal["met"] else "[red]no[/]")
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
