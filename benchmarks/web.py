"""In-browser latency of hone's web bundles against native onnxruntime, and the bundles' sizes.

Run:  .venv/bin/python benchmarks/web.py [--models resnet18,minilm] [--runs-wasm 10] [--runs-webgpu 3]

For each model: ``hone export --target web``, served by ``hone serve-web``'s server on 127.0.0.1,
opened in Debian's Chromium (Playwright) once forcing WASM and once forcing WebGPU; the page
reports the median of its timed runs after a warm-up run, the first run and session creation.
Native onnxruntime (CPU provider, this process, all optimizations, default threads) runs the same
sample in the same script, so the ratios compare runs of one machine at one time.

Caveat printed with the table: WebGPU here is SwiftShader, a software rasterizer on the CPU
(``isFallbackAdapter`` true). Its numbers say the WebGPU path works and what it costs on a CPU,
nothing about a GPU. Writes benchmarks/results/web-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

import hone
from hone.export.browser import open_bundle
from hone.export.web import export_web
from hone.export.web_server import WebServer
from hone.report.terminal import human_bytes
from hone.runtime import Session

ROOT = Path(__file__).resolve().parents[1]
console = Console()


def native_ms(model: hone.Model, folder: Path, runs: int) -> float:
    manifest = json.loads((folder / "manifest.json").read_text())
    feeds = {t["name"]: np.frombuffer((folder / t["file"]).read_bytes(), dtype=t["dtype"]).reshape(t["shape"])
             for t in manifest["sample"]["inputs"]}
    session = Session(model)
    session.run(feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(feeds)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench_model(name: str, work: Path, runs: dict[str, int]) -> dict[str, Any]:
    model = hone.load(name)
    folder = work / name
    result = export_web(model, folder)
    row: dict[str, Any] = {"model": name, "size_bytes": result.manifest.size_bytes,
                           "gzip_bytes": result.manifest.gzip_bytes,
                           "model_bytes": (folder / "model.onnx").stat().st_size,
                           "placement": result.manifest.placement.summary()}
    row["native_ms"] = native_ms(model, folder, max(runs.values()) * 3)
    with WebServer(folder) as server:
        for ep, count in runs.items():
            page = open_bundle(f"{server.url}?ep={ep}&runs={count}").result
            if "error" in page:
                row[ep] = {"error": page["error"]}
                continue
            row[ep] = {key: page[key] for key in ("median_ms", "first_run_ms", "session_ms", "runs",
                                                  "max_abs_error_vs_native", "adapter", "wasm_threads")}
            row[ep]["vs_native"] = page["median_ms"] / row["native_ms"]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,minilm")
    parser.add_argument("--runs-wasm", type=int, default=10)
    parser.add_argument("--runs-webgpu", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    runs = {"wasm": args.runs_wasm, "webgpu": args.runs_webgpu}
    with tempfile.TemporaryDirectory(prefix="hone-web-bench-") as work:
        rows = [bench_model(name, Path(work), runs) for name in args.models.split(",")]

    table = Table(title="hone web bundles in headless Chromium vs native onnxruntime (CPU), median ms")
    for column in ("model", "native", "WASM", "WASM / native", "WebGPU (software)", "WebGPU / native",
                   "first run WebGPU", "session WASM / WebGPU", "bundle (gzip)"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        wasm, webgpu = row["wasm"], row["webgpu"]
        cell = lambda r, key, fmt: fmt.format(r[key]) if key in r else r.get("error", "-")  # noqa: E731
        table.add_row(row["model"], f"{row['native_ms']:.2f}", cell(wasm, "median_ms", "{:.2f}"),
                      cell(wasm, "vs_native", "{:.1f}x"), cell(webgpu, "median_ms", "{:.1f}"),
                      cell(webgpu, "vs_native", "{:.0f}x"), cell(webgpu, "first_run_ms", "{:.0f}"),
                      f"{wasm.get('session_ms', 0):.0f} / {webgpu.get('session_ms', 0):.0f}",
                      f"{human_bytes(row['size_bytes'])} ({human_bytes(row['gzip_bytes'])})")
    console.print(table)
    console.print("WebGPU here is SwiftShader (software, isFallbackAdapter true): it shows the path works, "
                  "not GPU speed. WASM threads: " + ", ".join(str(r["wasm"].get("wasm_threads")) for r in rows))
    for row in rows:
        console.print(f"{row['model']}: {row['placement']}", highlight=False)
    out = Path(args.json) if args.json else ROOT / "benchmarks" / "results" / f"web-{dt.date.today()}.json"
    out.write_text(json.dumps({"runs": runs, "rows": rows}, indent=2) + "\n")
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
