"""hone's WGSL kernels on the WebGPU adapter wgpu-py finds, against numpy on the CPU.

Run:  .venv/bin/python benchmarks/wgsl_kernels.py [--sizes 128,256] [--repeats 5]

Each call of the numpy-facing API uploads its inputs, dispatches, and reads the output back, so the
times here are whole calls (transfer included), the median of ``--repeats`` warm calls. numpy's
matmul is the vendor library on the CPU (OpenBLAS). Every result is checked against numpy first.

On a machine without a GPU the adapter is Mesa's lavapipe (software Vulkan on the CPU): the table
then shows that the kernels are correct and how a software adapter compares, not GPU speed. The
adapter line says which it was. Writes benchmarks/results/wgsl-kernels-<adapter>-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from hone.kernels import wgsl as hw

ROOT = Path(__file__).resolve().parents[1]
console = Console()


def median_ms(run: Callable[[], object], repeats: int) -> float:
    run()  # warm: pipelines compiled, device created
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench(sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        a = rng.standard_normal((size, size)).astype(np.float32)
        b = rng.standard_normal((size, size)).astype(np.float32)
        expected = a @ b
        numpy_ms = median_ms(lambda: a @ b, repeats)
        flops = 2 * size**3
        for variant in hw.MATMUL_VARIANTS:
            error = float(np.max(np.abs(hw.matmul(a, b, variant) - expected)))
            ms = median_ms(lambda: hw.matmul(a, b, variant), repeats)
            rows.append({"kernel": f"matmul {variant}", "size": size, "ms": ms, "numpy_ms": numpy_ms,
                         "gflops": flops / ms / 1e6, "max_abs_error": error})
        bias = rng.standard_normal(size).astype(np.float32)
        expected = np.maximum(a + bias, 0) * np.float32(0.5)
        error = float(np.max(np.abs(hw.bias_act_scale(a, bias, 0.5) - expected)))
        ms = median_ms(lambda: hw.bias_act_scale(a, bias, 0.5), repeats)
        numpy_ms = median_ms(lambda: np.maximum(a + bias, 0) * np.float32(0.5), repeats)
        rows.append({"kernel": "bias_act_scale relu", "size": size, "ms": ms, "numpy_ms": numpy_ms,
                     "gbps": 2 * a.nbytes / ms / 1e6, "max_abs_error": error})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="128,256", help="square sizes, e.g. 128,256")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="where to write the result")
    args = parser.parse_args()
    info = hw.adapter_info()
    rows = bench([int(s) for s in args.sizes.split(",")], args.repeats)

    console.print(f"adapter: {info.summary()}")
    table = Table(title="hone.kernels.wgsl, whole calls (upload, dispatch, read back), median ms")
    for column in ("kernel", "size", "ms", "numpy ms", "vs numpy", "rate", "max abs error"):
        table.add_column(column, justify="left" if column == "kernel" else "right")
    for row in rows:
        rate = f"{row['gflops']:.2f} GFLOP/s" if "gflops" in row else f"{row['gbps']:.2f} GB/s"
        table.add_row(row["kernel"], str(row["size"]), f"{row['ms']:.2f}", f"{row['numpy_ms']:.3f}",
                      f"{row['numpy_ms'] / row['ms']:.3f}x", rate, f"{row['max_abs_error']:.1e}")
    console.print(table)
    if info.is_cpu:
        console.print("the adapter is software (runs on the CPU): correct results, not GPU speed")

    slug = re.sub(r"[^a-z0-9]+", "-", info.device.lower()).strip("-") or "adapter"
    out = Path(args.json) if args.json else ROOT / "benchmarks" / "results" / f"wgsl-kernels-{slug}-{dt.date.today()}.json"
    out.write_text(json.dumps({"adapter": info.__dict__ | {"is_cpu": info.is_cpu}, "repeats": args.repeats,
                               "rows": rows}, indent=2) + "\n")
    console.print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
