"""What onnxruntime's profiler costs: per-run latency with profiling on vs off, same session options.

Run: .venv/bin/python benchmarks/profile_overhead.py [--models resnet18,resnet50,minilm] [--runs 30]
Prints a table and writes benchmarks/results/profile-overhead-<date>.json. The two sessions run in
alternating blocks (10 off, 10 on, ...) so that machine noise hits both alike, and the first run
of each block is dropped: onnxruntime's idle threads spin for a while after a run, and would
slow the other session's first run. The ratio is on/off of the medians.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

import hone
from hone.data import synthesize
from hone.results import write_json
from hone.runtime import default_threads


_BLOCK = 10


@dataclass
class OverheadResult:
    model: str
    batch: int
    threads: int
    runs: int
    off_p50_ms: float
    on_p50_ms: float
    ratio: float


def _session(path: str, threads: int, profiling: bool, folder: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if profiling:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "ort")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def measure(name: str, batch: int, threads: int, runs: int) -> OverheadResult:
    model = hone.load(name)
    feeds = synthesize(model.inputs, batch=batch, dims=model.default_dims)
    with tempfile.TemporaryDirectory() as folder:
        sessions = {flag: _session(str(model.onnx_source()), threads, flag, folder) for flag in (False, True)}
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(3):
            for session in sessions.values():
                session.run(None, feeds)
        for _ in range(max(runs // _BLOCK, 1)):
            for flag, session in sessions.items():
                for index in range(_BLOCK + 1):
                    began = time.perf_counter()
                    session.run(None, feeds)
                    if index:
                        times[flag].append((time.perf_counter() - began) * 1000)
        sessions[True].end_profiling()
    off, on = float(np.median(times[False])), float(np.median(times[True]))
    return OverheadResult(name, batch, threads, len(times[False]), off, on, on / off)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,resnet50,minilm")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    threads = args.threads or default_threads()
    results = [measure(name, args.batch, threads, args.runs) for name in args.models.split(",")]
    table = Table(title=f"profiling overhead (batch {args.batch}, {threads} threads, {args.runs} runs each, alternating blocks)")
    for column in ("model", "off p50 ms", "on p50 ms", "on / off"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in results:
        table.add_row(r.model, f"{r.off_p50_ms:.3f}", f"{r.on_p50_ms:.3f}", f"{r.ratio:.3f}")
    Console(width=120).print(table)
    out = args.out or Path(__file__).parent / "results" / f"profile-overhead-{dt.date.today()}.json"
    write_json(results, out, force=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
