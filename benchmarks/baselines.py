"""Baselines of the zoo models: PyTorch eager vs onnxruntime (optimizations disabled / all).

Run: .venv/bin/python benchmarks/baselines.py [--models resnet18,minilm] [--batches 1,8]
Prints one table per model and writes benchmarks/results/baselines-<date>.json. Ratios are
measured in the same run on the same machine (speedup = eager p50 / variant p50, same batch).
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from rich.console import Console

import hone
from hone.report.terminal import bench_table
from hone.results import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,minilm")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--budget-s", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    console = Console(width=160)
    batches = [int(b) for b in args.batches.split(",")]
    results = []
    for name in args.models.split(","):
        result = hone.bench(name, batches=batches, threads=args.threads, budget_s=args.budget_s)
        console.print(bench_table(result))
        results.append(result)
    out = args.out or Path(__file__).parent / "results" / f"baselines-{dt.date.today()}.json"
    write_json(results, out, force=True)
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
