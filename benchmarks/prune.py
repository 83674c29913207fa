"""hone prune: sparsity, accuracy, size, compressed size and latency of pruned zoo models, same run.

Run: .venv/bin/python benchmarks/prune.py [--models digits_cnn,resnet18] [--threads 2] [--samples 200]
For each model: unstructured 50% and 80% (global magnitude), 2:4, and for digits_cnn 80% and 2:4
again with 3 epochs of fine-tuning (masks fixed). Accuracy: digits_cnn top-1 on its 450 held-out images;
resnet18 (seeded weights, no labels) top-1 agreement with the float model on synthesized inputs
(the gate's metric), and the mean cosine of the logits as well: on noise the seeded float model
gives one class to most inputs, so agreement is all-or-nothing where cosine shows the drift.
Latency: p50 at batch 1 under onnxruntime with all optimizations, float and pruned alternating in
the same run (3 rounds, lowest p50 of each); the sparsity-0 row measures the model against an
identical copy, so its ratio shows the noise. onnxruntime's CPU kernels are dense, so expect ~1.0x:
the gain is the compressed size.
Prints a table and writes benchmarks/results/prune-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

import hone
from hone.bench.sweep import machine_summary
from hone.quantize.gate import Budget, judge, plan_for
from hone.quantize.prune import prune
from hone.quantize.types import PruneResult
from hone.results import write_json

CONFIGS = (  # (label, options)
    ("none (A/A: latency noise)", {"sparsity": 0.0}),  # the same model twice: what a ratio of 1 looks like
    ("unstructured 50%", {"sparsity": 0.5}),
    ("unstructured 80%", {"sparsity": 0.8}),
    ("2:4", {"pattern": "2:4"}),
)
FINE_TUNED = (
    ("unstructured 80% + fine-tune", {"sparsity": 0.8, "fine_tune": True}),
    ("2:4 + fine-tune", {"pattern": "2:4", "fine_tune": True}),
)
FINE_TUNABLE = ("digits_cnn",)


@dataclass
class PruneBenchRow:
    model: str
    config: str
    seconds: float  # wall time of the prune call (gate and latency included)
    result: PruneResult
    logits_cosine: float | None = None  # mean cosine of pruned vs float logits, where the gate used agreement


@dataclass
class PruneBenchmark:
    date: str
    threads: int
    samples: int
    machine: dict[str, str]
    rows: list[PruneBenchRow]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits_cnn,resnet18")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=200, help="synthesized inputs for models without data")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows: list[PruneBenchRow] = []
    for name in args.models.split(","):
        model = hone.load(name)
        plan = plan_for(model, samples=args.samples, threads=args.threads)  # float outputs once per model
        cosine_plan = (plan_for(model, samples=args.samples, threads=args.threads, metric="cosine")
                       if plan.metric == "agreement" else None)
        configs = CONFIGS + (FINE_TUNED if name in FINE_TUNABLE else ())
        for label, options in configs:
            began = time.perf_counter()
            pruned, result = prune(model, threads=args.threads, plan=plan, **options)  # type: ignore[arg-type]
            row = PruneBenchRow(name, label, time.perf_counter() - began, result)
            if cosine_plan is not None:
                row.logits_cosine = judge(pruned, cosine_plan, Budget()).candidate_value
            rows.append(row)
    print_table(rows, args.threads)
    out = args.out or Path(__file__).parent / "results" / f"prune-{dt.date.today()}.json"
    write_json(PruneBenchmark(str(dt.date.today()), args.threads, args.samples, machine_summary(), rows), out,
               force=True)
    print(f"wrote {out}")


def print_table(rows: list[PruneBenchRow], threads: int) -> None:
    table = Table(title=f"hone prune: accuracy, size and latency (batch 1, {threads} threads, ORT all optimizations)")
    for column in ("model", "pruning", "sparsity", "accuracy float -> pruned", "gate", "size MB",
                   "zlib MB before -> after", "p50 ms float / pruned", "speedup"):
        table.add_column(column, justify="left" if column in ("model", "pruning", "accuracy float -> pruned")
                         else "right")
    for row in rows:
        r = row.result
        table.add_row(row.model, row.config, f"{r.achieved_sparsity:.1%}", _accuracy(row),
                      "pass" if r.passed else "miss", f"{r.size_bytes_before / 1e6:.2f} -> {r.size_bytes_after / 1e6:.2f}",
                      f"{r.compressed_bytes_before / 1e6:.2f} -> {r.compressed_bytes_after / 1e6:.2f} "
                      f"({r.compressed_bytes_after / r.compressed_bytes_before:.0%})",
                      f"{r.latency_ms_before:.3f} / {r.latency_ms_after:.3f}" if r.latency_ms_after else "-",
                      f"{r.speedup:.2f}x" if r.speedup else "-")
    Console(width=170).print(table)


def _accuracy(row: PruneBenchRow) -> str:
    result = row.result
    after = result.accuracy_after
    if after is None:
        return "-"
    if after.metric == "top1":
        tuned = (f" (pruned {result.accuracy_before_fine_tune.candidate_value:.2f})"
                 if result.accuracy_before_fine_tune is not None else "")
        return f"top-1 {after.float_value:.2f}% -> {after.candidate_value:.2f}%{tuned}"
    if after.metric == "agreement":
        return f"agreement {after.candidate_value:.1%}, logits cosine {row.logits_cosine:.3f}"
    return f"cosine {after.candidate_value:.4f}"


if __name__ == "__main__":
    main()
