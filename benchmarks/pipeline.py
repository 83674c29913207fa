"""Pipeline bubbles measured on stage processes, against (S-1)/(M+S-1) and hone's simulator.

Run:  .venv/bin/python benchmarks/pipeline.py [--quick]

1. compute-heavy: a transformer stack (width 512, sequence 128, micro-batches of 2) trained with
   2 layers per stage, about 100 ms of forward+backward per stage and micro-batch; S = 2 and 4,
   M = 8 and 16, GPipe and 1F1B. Per run: measured step and bubble, the formula, the simulator's
   step on the measured block costs and link, peak in-flight micro-batches and activation bytes
   per stage, and (once per S) the error against one process and the single-process time.
2. communication-heavy: a chain of cheap element-wise blocks on 8 MB activations, forward only;
   the measured bubble next to the simulator's, which explains it (the link paces the step).
3. projection: the measured per-stage costs of (1) on S dedicated devices joined by a 25 GB/s link
   (the simulator), against the whole model on one such device; this machine has 2 cores, so the
   processes of (1) share them and no speed-up can show here.
4. bad input: the error line and the time to fail for S > blocks, M not dividing the batch, a stage
   that raises mid-step, and a stage that hangs (the others time out).

Writes benchmarks/results/pipeline-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from torch import nn

from hone.errors import HoneError
from hone.pipeline import Link, PipelineSource, StageCost, run_pipeline, simulate
from hone.results import to_jsonable
from hone.specs import TensorSpec
from hone.zoo.transformer import build_stack

ROOT = Path(__file__).resolve().parents[1]
console = Console(width=200)

WIDTH, HEADS, SEQUENCE, MICROBATCH = 512, 8, 128, 2
LAYERS_PER_STAGE = 2
DEVICE_LINK = Link(bandwidth_gbps=25.0, latency_ms=0.01)


def transformer_source(stages: int) -> PipelineSource:
    return PipelineSource(
        f"transformer-{LAYERS_PER_STAGE * stages}x{WIDTH}",
        input_spec=TensorSpec("hidden", "float32", ("batch", SEQUENCE, WIDTH)),
        factory=functools.partial(build_stack, LAYERS_PER_STAGE * stages, WIDTH, HEADS),
    )


class Scale(nn.Module):
    """An element-wise block: one multiply-add per element, nothing to compute, much to send."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.5 + 1.0


def elementwise_chain(blocks: int) -> nn.Sequential:
    return nn.Sequential(*(Scale() for _ in range(blocks)))


def communication_source(megabytes: int) -> PipelineSource:
    per_sample = megabytes * 1_000_000 // 4 // MICROBATCH
    return PipelineSource(
        f"elementwise-{megabytes}MB",
        input_spec=TensorSpec("x", "float32", ("batch", per_sample)),
        factory=functools.partial(elementwise_chain, 8),
    )


def in_run_stage_ms(result: Any) -> list[float]:
    """Each stage's busy time per micro-batch in the reported step (forward + backward)."""
    return [s.busy_ms / result.microbatches for s in result.stages]


def compute_heavy(quick: bool) -> list[dict[str, Any]]:
    rows = []
    stage_counts = (2,) if quick else (2, 4)
    microbatch_counts = (8,) if quick else (8, 16)
    for stages in stage_counts:
        for microbatches in microbatch_counts:
            for schedule in ("gpipe", "1f1b"):
                first_of_s = microbatches == microbatch_counts[0] and schedule == "1f1b"
                started = time.perf_counter()
                result = run_pipeline(
                    transformer_source(stages), stages=stages, microbatches=microbatches,
                    batch=MICROBATCH * microbatches, schedule=schedule, mode="train", steps=5,
                    check=first_of_s, single_process_runs=1 if first_of_s else 0, timeout_s=600,
                )
                rows.append({"result": result, "wall_s": time.perf_counter() - started,
                             "in_run_ms": in_run_stage_ms(result)})
                console.print(
                    f"S={stages} M={microbatches} {schedule}: step {result.step_ms:.0f} ms, bubble "
                    f"{result.bubble_measured:.1%} (formula {result.bubble_formula:.1%}), simulated "
                    f"{result.simulated_step_ms:.0f} ms", highlight=False,
                )
    return rows


def communication_heavy(quick: bool) -> list[dict[str, Any]]:
    rows = []
    for stages in (2,) if quick else (2, 4):
        result = run_pipeline(communication_source(8), stages=stages, microbatches=8, batch=8 * MICROBATCH,
                              schedule="gpipe", mode="inference", steps=4, single_process_runs=3, timeout_s=300)
        rows.append({"result": result})
        console.print(f"communication S={stages}: step {result.step_ms:.1f} ms, bubble {result.bubble_measured:.1%}, "
                      f"simulated {result.simulated_step_ms:.1f} ms ({result.simulated_bubble:.1%})", highlight=False)
    return rows


def projection(compute_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The measured stage costs on dedicated devices: what the pipeline would give where it can."""
    projected = []
    for row in compute_rows:
        result = row["result"]
        costs = [StageCost(s.forward_ms, s.backward_ms, s.activation_bytes) for s in result.stages]
        simulated = simulate(costs, schedule=result.schedule, mode=result.mode,
                             microbatches=result.microbatches, link=DEVICE_LINK)
        one_device_ms = sum(s.cost_ms for s in result.stages) * result.microbatches
        projected.append({
            "stages": len(result.stages), "microbatches": result.microbatches, "schedule": result.schedule,
            "one_device_ms": one_device_ms, "pipeline_ms": simulated.step_ms,
            "speedup": one_device_ms / simulated.step_ms, "bubble": simulated.bubble,
        })
    return projected


def bad_input() -> list[dict[str, Any]]:
    models = ROOT / "tests" / "pipeline" / "models.py"
    from hone.pipeline import resolve

    cases = [
        ("S larger than the blocks", lambda: run_pipeline(transformer_source(2), stages=5, microbatches=4, batch=8)),
        ("M does not divide the batch", lambda: run_pipeline(transformer_source(2), stages=2, microbatches=3, batch=8)),
        ("a stage raises mid-step", lambda: run_pipeline(
            resolve(f"{models}:failing_chain", input_shapes=["4,8"]), stages=2, microbatches=4, batch=4,
            steps=1, timeout_s=30)),
        ("a stage hangs (timeout 5 s)", lambda: run_pipeline(
            resolve(f"{models}:hanging_chain", input_shapes=["4,8"]), stages=2, microbatches=2, batch=2,
            steps=1, timeout_s=5)),
    ]
    rows = []
    for label, call in cases:
        started = time.perf_counter()
        try:
            call()
            outcome = "no error (a defect)"
        except HoneError as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        rows.append({"case": label, "error": outcome, "seconds_to_fail": time.perf_counter() - started})
    return rows


def print_tables(compute_rows, communication_rows, projected, failures) -> None:  # noqa: ANN001
    table = Table(title=f"compute-heavy: transformer width {WIDTH}, seq {SEQUENCE}, micro-batch {MICROBATCH}, "
                        f"{LAYERS_PER_STAGE} layers per stage, train, {os.cpu_count()} cores")
    for column in ("S", "M", "schedule", "planned ms/mb", "in-run ms/mb", "step ms", "bubble", "formula",
                   "vs formula", "simulated ms", "sim / step", "planned ms", "plan / step", "peak in flight",
                   "peak activations MB", "error", "grad rel err"):
        table.add_column(column, justify="right")
    for row in compute_rows:
        r = row["result"]
        table.add_row(
            str(len(r.stages)), str(r.microbatches), r.schedule,
            "/".join(f"{s.cost_ms:.0f}" for s in r.stages), "/".join(f"{v:.0f}" for v in row["in_run_ms"]),
            f"{r.step_ms:.0f}", f"{r.bubble_measured:.1%}",
            f"{r.bubble_formula:.1%}", f"{(r.bubble_measured - r.bubble_formula) / r.bubble_formula:+.0%}",
            f"{r.simulated_step_ms:.0f}", f"{r.simulated_step_ms / r.step_ms:.2f}",
            f"{r.planned_step_ms:.0f}", f"{r.planned_step_ms / r.step_ms:.2f}",
            "/".join(str(s.peak_in_flight) for s in r.stages),
            "/".join(f"{s.peak_activation_bytes / 1e6:.0f}" for s in r.stages),
            "-" if r.max_abs_error_vs_single_process != r.max_abs_error_vs_single_process else f"{r.max_abs_error_vs_single_process:.1g}",
            "-" if r.max_grad_rel_error_vs_single_process is None else f"{r.max_grad_rel_error_vs_single_process:.1g}",
        )
    console.print(table)
    table = Table(title="communication-heavy: 8 element-wise blocks on 8 MB activations, inference, GPipe, M=8")
    for column in ("S", "stage ms/mb", "sends MB", "link GB/s", "step ms", "bubble", "formula", "simulated ms",
                   "simulated bubble", "single process ms"):
        table.add_column(column, justify="right")
    for row in communication_rows:
        r = row["result"]
        table.add_row(str(len(r.stages)), "/".join(f"{s.cost_ms:.1f}" for s in r.stages),
                      f"{r.stages[0].activation_bytes / 1e6:.0f}", f"{r.stages[0].link_bandwidth_gbps:.2f}",
                      f"{r.step_ms:.1f}", f"{r.bubble_measured:.1%}", f"{r.bubble_formula:.1%}",
                      f"{r.simulated_step_ms:.1f}", f"{r.simulated_bubble:.1%}", f"{r.single_process_ms:.1f}")
    console.print(table)
    table = Table(title=f"projection: the measured stage costs on S dedicated devices, link "
                        f"{DEVICE_LINK.bandwidth_gbps:g} GB/s + {DEVICE_LINK.latency_ms} ms")
    for column in ("S", "M", "schedule", "one device ms", "pipeline ms", "speed-up", "bubble"):
        table.add_column(column, justify="right")
    for row in projected:
        table.add_row(str(row["stages"]), str(row["microbatches"]), row["schedule"], f"{row['one_device_ms']:.0f}",
                      f"{row['pipeline_ms']:.0f}", f"{row['speedup']:.2f}x", f"{row['bubble']:.1%}")
    console.print(table)
    table = Table(title="bad input")
    for column in ("case", "seconds to fail", "error"):
        table.add_column(column)
    for row in failures:
        table.add_row(row["case"], f"{row['seconds_to_fail']:.1f}", escape(row["error"]))
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="S=2, M=8 only (a smoke run)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    compute_rows = compute_heavy(args.quick)
    communication_rows = communication_heavy(args.quick)
    projected = projection(compute_rows)
    failures = bad_input()
    print_tables(compute_rows, communication_rows, projected, failures)
    single = [r["result"] for r in compute_rows if r["result"].single_process_ms == r["result"].single_process_ms]
    for result in single:
        console.print(f"S={len(result.stages)}: one process, whole batch, {os.cpu_count()} threads: "
                      f"{result.single_process_ms:.0f} ms vs the pipeline's {result.step_ms:.0f} ms step "
                      f"({result.single_process_ms / result.step_ms:.2f}x)", highlight=False)
    out = args.out or ROOT / "benchmarks" / "results" / f"pipeline-{dt.date.today().isoformat()}.json"
    payload = {
        "machine": {"cores": os.cpu_count(), "torch": torch.__version__},
        "compute_heavy": [
            {**{k: v for k, v in to_jsonable(r["result"]).items() if k != "timeline"}, "wall_s": r["wall_s"],
             "in_run_stage_ms_per_microbatch": r["in_run_ms"]}
            for r in compute_rows
        ],
        "communication_heavy": [
            {k: v for k, v in to_jsonable(r["result"]).items() if k != "timeline"} for r in communication_rows
        ],
        "projection": projected,
        "bad_input": failures,
        "median_simulated_error_vs_step": statistics.median(
            abs(r["result"].simulated_step_ms - r["result"].step_ms) / r["result"].step_ms for r in compute_rows
        ),
        "median_bubble_error_vs_formula": statistics.median(
            abs(r["result"].bubble_measured - r["result"].bubble_formula) / r["result"].bubble_formula
            for r in compute_rows
        ),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, allow_nan=False, default=str) + "\n")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
