"""hone's Triton kernels against the vendor library (cuBLAS through torch.matmul) and unfused torch.

Run on a GPU:  .venv/bin/python benchmarks/kernels.py            (under 5 minutes on an H100)
CPU smoke:     TRITON_INTERPRET=1 .venv/bin/python benchmarks/kernels.py --smoke

First the ceilings are measured on the device: a large device-to-device copy (bytes read + written
per second) and torch.matmul (cuBLAS) per dtype and size. Every kernel is checked against its torch
reference, then timed with CUDA events (``triton.testing.do_bench``, median of warm runs) on random
inputs; matmul inputs rotate over enough copies to exceed the L2 cache, so no run reads a warm cache.

Tables:
- matmul at each size cubed, per dtype (fp32 runs as tf32 in the tensorcore variant and in cuBLAS
  with TF32 allowed): GFLOP/s (2 M N K / time), % of torch.matmul, % of the measured peak (the best
  torch.matmul rate of that dtype);
- fused kernels: GB/s (minimum bytes: read x once, write out once) against the copy bandwidth, and
  speedup over the unfused torch sequence (x + bias, activation, * scale; batch_norm, relu).

The smoke mode runs the same code at tiny sizes on the CPU through Triton's interpreter (rates there
mean nothing; it proves the script and the checks run) and skips the naive matmul above 32.

Writes benchmarks/results/kernels-<device>-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import triton
from rich.console import Console
from rich.table import Table

from hone.kernels import triton as hk
from hone.kernels.triton import reference

ROOT = Path(__file__).resolve().parents[1]
console = Console()
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
ROTATE_BYTES = 512 * 1024**2  # rotate matmul inputs over at least this much memory (> any L2)
NAIVE_LARGEST = 4096  # the naive kernel at 8192^3 would take minutes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CPU interpreter in CI)")
    parser.add_argument("--sizes", default=None, help="matmul sizes, e.g. 4096,8192")
    parser.add_argument("--dtypes", default=None, help="fp32,fp16,bf16")
    parser.add_argument("--json", default=None, help="where to write the result")
    args = parser.parse_args()
    ok, where = hk.available()
    if not ok:
        console.print(f"error: {where}")
        return 2
    device = "cpu" if hk.INTERPRETED else "cuda"
    smoke = args.smoke or device == "cpu"
    sizes = [int(s) for s in (args.sizes or ("32,64" if smoke else "4096,8192")).split(",")]
    dtype_names = (args.dtypes or ("fp32,fp16" if smoke else "fp32,fp16,bf16")).split(",")
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # cuBLAS fp32 on tensor cores, like our tf32
    timer = _cpu_timer if device == "cpu" else _gpu_timer
    card = torch.cuda.get_device_name() if device == "cuda" else "CPU (Triton interpreter)"
    console.print(f"[bold]{card}[/]: {where}")

    copy_gbps = copy_bandwidth(device, timer, smoke)
    matmul_rows = [row for size in sizes for name in dtype_names for row in bench_matmul(size, name, device, timer)]
    fused_rows = bench_fused(device, timer, smoke, copy_gbps)
    show(card, copy_gbps, matmul_rows, fused_rows)
    result = {
        "benchmark": "kernels",
        "date": dt.date.today().isoformat(),
        "device": card,
        "mode": "interpreter smoke (rates meaningless)" if device == "cpu" else "gpu",
        "triton": triton.__version__,
        "torch": torch.__version__,
        "copy_gb_per_s": copy_gbps,
        "matmul": matmul_rows,
        "fused": fused_rows,
    }
    slug = re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")
    out = Path(args.json) if args.json else ROOT / "benchmarks" / "results" / f"kernels-{slug}-{dt.date.today()}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {out}")
    failed = [r for r in matmul_rows + fused_rows if not r["correct"]]
    return 1 if failed else 0


# -- timing ----------------------------------------------------------------------------------------


def _gpu_timer(run: Callable[[], object]) -> float:
    """Median ms with CUDA events (warm; Triton's do_bench)."""
    return float(triton.testing.do_bench(run, warmup=25, rep=100, return_mode="median"))


def _cpu_timer(run: Callable[[], object]) -> float:
    run()
    times = []
    for _ in range(3):
        began = time.perf_counter()
        run()
        times.append((time.perf_counter() - began) * 1000)
    return sorted(times)[1]


def copy_bandwidth(device: str, timer: Callable[[Callable[[], object]], float], smoke: bool) -> float:
    """GB/s of a large device-to-device copy, counting the bytes read and written."""
    count = (1 << 16) if smoke else (1 << 28)  # 1 GiB of fp32 on the GPU
    src = torch.rand(count, device=device)
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src))
    return 2 * src.numel() * src.element_size() / (ms / 1000) / 1e9


# -- matmul ----------------------------------------------------------------------------------------


def bench_matmul(size: int, dtype_name: str, device: str, timer) -> list[dict[str, Any]]:
    dtype = DTYPES[dtype_name]
    if device == "cpu" and dtype == torch.bfloat16:
        console.print("skip bf16 in the interpreter: it computes bf16 wrongly without saying so")
        return []
    m = n = k = size
    copies = max(1, min(8, ROTATE_BYTES // (2 * size * size * dtype.itemsize)))
    pairs = [(torch.randn(m, k, device=device).to(dtype), torch.randn(k, n, device=device).to(dtype)) for _ in range(copies)]
    turn = {"i": 0}

    def rotating(fn: Callable[[torch.Tensor, torch.Tensor], object]) -> Callable[[], object]:
        def run() -> object:
            turn["i"] = (turn["i"] + 1) % copies
            a, b = pairs[turn["i"]]
            return fn(a, b)

        return run

    flops = 2 * m * n * k
    vendor_ms = timer(rotating(torch.matmul))
    rows: list[dict[str, Any]] = [_matmul_row("torch.matmul (cuBLAS)" if device == "cuda" else "torch.matmul", size, dtype_name, flops, vendor_ms, vendor_ms, True, 0.0)]
    a, b = pairs[0]
    expected = reference.matmul(a, b)
    for variant in hk.VARIANTS:
        if variant == "naive" and size > (32 if device == "cpu" else NAIVE_LARGEST):
            continue
        if variant == "tensorcore" and device == "cuda":
            hk.tune_matmul(a, b, bench=_gpu_timer)
        got = hk.matmul(a, b, variant)
        error = float((got.float() - expected.float()).abs().max() / (expected.float().abs().max() + 1e-12))
        tolerance = 1e-4 if dtype == torch.float32 and variant != "tensorcore" else 2e-2
        ms = timer(rotating(lambda a, b, v=variant: hk.matmul(a, b, v)))
        rows.append(_matmul_row(f"hone {variant}", size, dtype_name, flops, ms, vendor_ms, error <= tolerance, error))
    return rows


def _matmul_row(system: str, size: int, dtype: str, flops: int, ms: float, vendor_ms: float, correct: bool, error: float) -> dict[str, Any]:
    return {
        "system": system,
        "size": size,
        "dtype": dtype,
        "ms": ms,
        "gflops": flops / (ms / 1000) / 1e9,
        "of_vendor": vendor_ms / ms,
        "correct": correct,
        "max_rel_error": error,
    }


# -- fused elementwise -----------------------------------------------------------------------------


def bench_fused(device: str, timer, smoke: bool, copy_gbps: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    dtypes = [torch.float32, torch.float16]
    rows_n = (64, 256) if smoke else (16384, 8192)
    for dtype in dtypes:
        x = torch.randn(*rows_n, device=device).to(dtype)
        bias = torch.randn(rows_n[1], device=device).to(dtype)
        fused = lambda: hk.bias_act_scale(x, bias, 0.5, "relu")  # noqa: E731
        unfused = lambda: reference.bias_act_scale(x, bias, 0.5, "relu")  # noqa: E731
        rows.append(_fused_row("bias_act_scale", list(x.shape), dtype, x, fused, unfused, timer, copy_gbps))
    shape = (2, 8, 8, 8) if smoke else (64, 256, 56, 56)
    for dtype in dtypes:
        for layout in ("nchw", "nhwc"):
            x = torch.randn(*shape, device=device).to(dtype)
            channels = shape[1]
            if layout == "nhwc":
                x = x.permute(0, 2, 3, 1).contiguous()
            stats = [torch.randn(channels, device=device), torch.rand(channels, device=device) + 0.5,
                     torch.randn(channels, device=device), torch.randn(channels, device=device)]  # fmt: skip
            fused = lambda x=x, s=stats, lay=layout: hk.batchnorm_relu(x, *s, 1e-5, lay)  # noqa: E731
            unfused = lambda x=x, s=stats, lay=layout: _torch_batchnorm_relu(x, s, lay)  # noqa: E731
            rows.append(_fused_row(f"batchnorm_relu {layout}", list(x.shape), dtype, x, fused, unfused, timer, copy_gbps))
    return rows


def _torch_batchnorm_relu(x: torch.Tensor, stats: list[torch.Tensor], layout: str) -> torch.Tensor:
    """torch's two ops (batch_norm in inference mode, then relu), answered in x's layout."""
    mean, var, gamma, beta = stats
    nchw = x.permute(0, 3, 1, 2) if layout == "nhwc" else x  # a view: batch_norm wants channels on dim 1
    y = torch.relu(torch.nn.functional.batch_norm(nchw, mean, var, gamma, beta, False, 0.0, 1e-5))
    return y.permute(0, 2, 3, 1) if layout == "nhwc" else y


def _fused_row(name, shape, dtype, x, fused, unfused, timer, copy_gbps) -> dict[str, Any]:
    got, expected = fused(), unfused()
    error = float((got.float() - expected.float()).abs().max())
    fused_ms, unfused_ms = timer(fused), timer(unfused)
    gbps = 2 * x.numel() * x.element_size() / (fused_ms / 1000) / 1e9
    return {
        "kernel": name,
        "shape": shape,
        "dtype": str(dtype).removeprefix("torch."),
        "fused_ms": fused_ms,
        "unfused_ms": unfused_ms,
        "speedup": unfused_ms / fused_ms,
        "gb_per_s": gbps,
        "of_copy": gbps / copy_gbps,
        "correct": error <= (1e-4 if dtype == torch.float32 else 2e-2),
        "max_abs_error": error,
    }


def show(card: str, copy_gbps: float, matmul_rows: list[dict[str, Any]], fused_rows: list[dict[str, Any]]) -> None:
    peaks: dict[str, float] = {}
    for row in matmul_rows:
        if row["system"].startswith("torch"):
            peaks[row["dtype"]] = max(peaks.get(row["dtype"], 0.0), row["gflops"])
    table = Table(title=f"matmul on {card} (peak: best torch.matmul rate of the dtype)")
    for column in ("size", "dtype", "system", "ms", "GFLOP/s", "% of torch.matmul", "% of peak", "correct"):
        table.add_column(column, justify="right" if column not in ("system", "dtype") else "left")
    for row in matmul_rows:
        table.add_row(
            f"{row['size']}^3", row["dtype"], row["system"], f"{row['ms']:.3f}", f"{row['gflops']:.0f}",
            f"{100 * row['of_vendor']:.0f}%", f"{100 * row['gflops'] / peaks[row['dtype']]:.0f}%",
            "yes" if row["correct"] else f"[red]no ({row['max_rel_error']:.1e})[/]",
        )  # fmt: skip
    console.print(table)
    table = Table(title=f"fused kernels (copy bandwidth {copy_gbps:.0f} GB/s)")
    for column in ("kernel", "shape", "dtype", "fused ms", "unfused ms", "speedup", "GB/s", "% of copy", "correct"):
        table.add_column(column)
    for row in fused_rows:
        table.add_row(
            row["kernel"], "x".join(map(str, row["shape"])), row["dtype"], f"{row['fused_ms']:.3f}",
            f"{row['unfused_ms']:.3f}", f"{row['speedup']:.2f}x", f"{row['gb_per_s']:.0f}",
            f"{100 * row['of_copy']:.0f}%", "yes" if row["correct"] else "[red]no[/]",
        )  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
