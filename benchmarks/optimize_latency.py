"""hone optimize: node counts and latency of the optimized model vs the original, same run.

Run: .venv/bin/python benchmarks/optimize_latency.py [--models resnet50,minilm,minilm-eager] [--batch 1]
Both models run at ORT_DISABLE_ALL (what a runtime without an optimizer sees: hone must do the
work itself) and at ORT_ENABLE_ALL (never slower is the bar). Prints a table and writes
benchmarks/results/optimize-latency-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

import hone
from hone.bench import bench
from hone.bench.sweep import merge
from hone.results import write_json


@dataclass
class OptimizeLatency:
    model: str
    target: str
    batch: int
    nodes_before: int
    nodes_after: int
    disabled_before_ms: float
    disabled_after_ms: float
    all_before_ms: float
    all_after_ms: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,minilm,minilm-eager")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        model = hone.load(name)
        optimized, report = hone.optimize(model, target="ort-cpu")
        options = dict(batches=[args.batch], threads=args.threads, budget_s=args.budget_s,
                       variants=["ort-disabled", "ort-all"])
        result = bench(model, **options)  # type: ignore[arg-type]
        merge(result, bench(optimized, **options), "hone")  # type: ignore[arg-type]
        p50 = {c.variant: c.p50_ms for c in result.configs}
        rows.append(OptimizeLatency(name, "ort-cpu", args.batch, report.nodes_before, report.nodes_after,
                                    p50["ort-disabled"], p50["hone+ort-disabled"], p50["ort-all"], p50["hone+ort-all"]))
    table = Table(title=f"hone optimize --target ort-cpu: batch {args.batch}, {args.threads} threads, p50 ms")
    for column in ("model", "nodes", "ORT disabled: before", "after", "speedup", "ORT all: before", "after", "speedup"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in rows:
        table.add_row(r.model, f"{r.nodes_before} -> {r.nodes_after}", f"{r.disabled_before_ms:.2f}",
                      f"{r.disabled_after_ms:.2f}", f"{r.disabled_before_ms / r.disabled_after_ms:.2f}x",
                      f"{r.all_before_ms:.2f}", f"{r.all_after_ms:.2f}", f"{r.all_before_ms / r.all_after_ms:.2f}x")
    Console(width=140).print(table)
    out = args.out or Path(__file__).parent / "results" / f"optimize-latency-{dt.date.today()}.json"
    write_json(rows, out, force=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
