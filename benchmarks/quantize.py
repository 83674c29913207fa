"""hone quantize against the float model and against onnxruntime's own quantizer, same run.

Run: .venv/bin/python benchmarks/quantize.py [--models resnet50,minilm,digits_cnn] [--threads 2]
     [--rounds 5] [--block-s 2]

- resnet50, batch 1: onnxruntime fp32 (ORT_ENABLE_ALL) vs "plain ORT INT8" (quant_pre_process,
  then quantize_static with its defaults: QDQ, per-tensor, MinMax, on the same calibration inputs)
  vs hone's kept INT8. Accuracy: top-1 agreement with the float model on 1000 synthesized inputs
  (the zoo's resnet50 has seeded weights and no labelled data). Size of each .onnx.
- minilm, batch 1, sequence 128: PyTorch eager vs onnxruntime fp32 vs "ORT's own fused INT8"
  (onnxruntime.transformers optimizer for BERT, then quantize_dynamic with its defaults, which
  quantizes the fused Attention into QAttention) vs hone's kept model. Accuracy: cosine of the
  sentence embedding with the float model on the zoo's 32 real sentences, one at a time.
- digits_cnn: held-out top-1 of float and INT8 and what the gate did.

Timing: every system of a model runs in one process; blocks alternate (A B C A B C ...) for
``--rounds`` rounds of ``--block-s`` seconds each and each system's p50 is the median of all its
runs; speedups are ratios of those p50s, so machine noise hits every system alike. Each round
also records how many cores other processes used; ``--rounds`` should be odd.
Prints tables and writes benchmarks/results/quantize-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from rich.console import Console
from rich.table import Table

from optimize_compare import OtherLoad  # benchmarks/ is on sys.path when run as a script

from hone.bench.race import race as alternate
from hone.bench.sweep import machine_summary
from hone.bench.stats import summarize
from hone.data import synthesize
from hone.model import Model
from hone.quantize import QuantizeResult, quantize
from hone.quantize.calibration import calibration_set
from hone.quantize.gate import Budget, judge, plan_for
from hone.quantize.int8 import size_bytes
from hone.report.terminal import human_bytes
from hone.results import write_json
from hone.runtime import Session, SessionConfig
from hone.sources import load

GOALS = {  # model -> (system that must win, baseline, minimum speedup)
    "resnet50": ("hone INT8", "ORT fp32", 2.2),
    "minilm": ("hone INT8", "PyTorch eager", 2.5),
}


@dataclass
class SystemRow:
    system: str
    p50_ms: float
    runs: int
    size_bytes: int | None = None
    accuracy: str = ""
    accuracy_value: float | None = None
    speedup_vs_baseline: float | None = None


@dataclass
class ModelReport:
    model: str
    batch: int
    threads: int
    baseline: str
    rows: list[SystemRow]
    round_other_load_cores: list[float]
    quantize: QuantizeResult | None = None
    goal: str = ""
    goal_met: bool | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class QuantizeBenchmark:
    date: str
    threads: int
    machine: dict[str, str]
    models: list[ModelReport]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,minilm,digits_cnn")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--block-s", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    console = Console(width=160)
    reports = []
    for name in args.models.split(","):
        bench = {"resnet50": bench_resnet50, "minilm": bench_minilm, "digits_cnn": bench_digits}[name]
        report = bench(args.threads, args.rounds, args.block_s, console)
        console.print(table(report))
        reports.append(report)
        gc.collect()
    out = args.out or Path(__file__).parent / "results" / f"quantize-{dt.date.today()}.json"
    write_json(QuantizeBenchmark(str(dt.date.today()), args.threads, machine_summary(), reports), out, force=True)
    console.print(f"wrote {out}")


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


def bench_resnet50(threads: int, rounds: int, block_s: float, console: Console) -> ModelReport:
    original = load("resnet50")
    console.log("resnet50: hone quantize (static INT8, gate, fallback, speed gate)")
    kept, result = quantize(original, threads=threads)
    console.log("resnet50: hone quantize again with the agreement budget waived (its INT8 speed and accuracy)")
    waived, waived_result = quantize(original, threads=threads, budget="agreement=0")
    console.log("resnet50: plain ORT INT8 (quant_pre_process + quantize_static defaults)")
    plain = plain_ort_static(original)
    plan = plan_for(original, samples=1000, threads=threads)
    systems = {"ORT fp32": original, "plain ORT INT8": plain, "hone INT8": kept,
               f"hone INT8, gate waived ({waived_result.format})": waived}
    feeds = synthesize(original.inputs, batch=1, dims=original.default_dims, seed=0)
    runners = {label: session_runner(model, threads, feeds) for label, model in systems.items()}
    timings, loads = race(runners, rounds, block_s, console)
    rows = []
    for label, model in systems.items():
        accuracy = judge(model, plan, Budget())
        rows.append(SystemRow(label, summarize(timings[label]).p50_ms, len(timings[label]), size_bytes(model),
                              f"agreement {accuracy.candidate_value:.1%} on {accuracy.samples} synthesized",
                              accuracy.candidate_value))
    report = ModelReport("resnet50", 1, threads, "ORT fp32", rows, loads, result)
    report.notes.append(_margin_note(plan))
    return finish(report)


def _margin_note(plan) -> str:
    """How decisive the float model's top-1 is on these inputs (small margins flip under any noise)."""
    logits = np.concatenate(plan.float_outputs)
    ordered = np.sort(logits, axis=1)
    margin = (ordered[:, -1] - ordered[:, -2]) / logits.std(axis=1)
    return (f"float model on synthesized inputs: {len(set(logits.argmax(axis=1)))} distinct top-1 classes over "
            f"{len(logits)} inputs; top-1 margin over the logits' std: median {np.median(margin):.3f}, "
            f"10th percentile {np.percentile(margin, 10):.3f} (seeded weights: near-ties that INT8 noise flips)")


def bench_minilm(threads: int, rounds: int, block_s: float, console: Console) -> ModelReport:
    original = load("minilm")
    console.log("minilm: hone quantize (dynamic INT8, split attention, smoothing, gate, speed gate)")
    kept, result = quantize(original, threads=threads)
    console.log("minilm: ORT's own fused INT8 (transformers optimizer + quantize_dynamic defaults)")
    ort_int8 = ort_transformers_int8(original)
    plan = plan_for(original, threads=threads, batch=1)
    feeds = synthesize(original.inputs, batch=1, dims=original.default_dims, seed=0)
    systems = {"ORT fp32": original, "ORT fused INT8": ort_int8, "hone INT8": kept}
    runners = {"PyTorch eager": eager_runner(original, threads, feeds)}
    runners.update({label: session_runner(model, threads, feeds) for label, model in systems.items()})
    timings, loads = race(runners, rounds, block_s, console)
    rows = [SystemRow("PyTorch eager", summarize(timings["PyTorch eager"]).p50_ms, len(timings["PyTorch eager"]),
                      accuracy="the reference (cosine 1 by definition)")]
    for label, model in systems.items():
        accuracy = judge(model, plan, Budget())
        rows.append(SystemRow(label, summarize(timings[label]).p50_ms, len(timings[label]), size_bytes(model),
                              f"cosine mean {accuracy.candidate_value:.4f}, min {accuracy.cosine_min:.4f}",
                              accuracy.candidate_value))
    report = ModelReport("minilm", 1, threads, "PyTorch eager", rows, loads, result)
    report.notes.append(f"sequence {original.default_dims.get('sequence')}; accuracy on {plan.data}, batch 1")
    return finish(report)


def bench_digits(threads: int, rounds: int, block_s: float, console: Console) -> ModelReport:
    original = load("digits_cnn")
    kept, result = quantize(original, threads=threads)
    feeds = synthesize(original.inputs, batch=1, dims=original.default_dims, seed=0)
    timings, loads = race({"ORT fp32": session_runner(original, threads, feeds),
                           "hone kept": session_runner(kept, threads, feeds)}, rounds, block_s / 2, console)
    rows = []
    for candidate in result.candidates:
        rows.append(SystemRow(candidate.name + (" (kept)" if candidate.chosen else ""),
                              candidate.p50_ms or float("nan"), 0, candidate.size_bytes,
                              f"top-1 {candidate.accuracy.candidate_value:.2f}% (float "
                              f"{candidate.accuracy.float_value:.2f}%)", candidate.accuracy.candidate_value))
    for label in timings:
        rows.append(SystemRow(label + f" ({result.format})" if label == "hone kept" else label,
                              summarize(timings[label]).p50_ms, len(timings[label])))
    report = ModelReport("digits_cnn", 1, threads, "ORT fp32", rows, loads, result)
    report.notes.extend(result.notes)
    drop = None if result.accuracy is None else result.accuracy.float_value - result.accuracy.candidate_value
    report.goal = "INT8 top-1 drop <= 0.5 points on the held-out split"
    candidate_drops = [c.accuracy.float_value - c.accuracy.candidate_value for c in result.candidates]
    report.goal_met = bool(candidate_drops) and min(candidate_drops) <= 0.5
    report.notes.append(f"kept: {result.format}" + (f", drop {drop:.2f} points" if drop is not None else ""))
    return fill_speedups(report)


# ---------------------------------------------------------------------------------------------
# The rivals
# ---------------------------------------------------------------------------------------------


def plain_ort_static(original: Model) -> Model:
    """onnxruntime's recommended recipe with its defaults, calibrated on hone's calibration inputs."""
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calibration = calibration_set(original)
    with tempfile.TemporaryDirectory(prefix="hone-bench-") as folder:
        source, prepared, target = (Path(folder) / n for n in ("float.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(ir.to_proto(original.ir), source)
        quant_pre_process(str(source), str(prepared))
        quantize_static(str(prepared), str(target), calibration.reader())
        return _loaded(original, target, "plain ORT static INT8")


def ort_transformers_int8(original: Model) -> Model:
    """onnxruntime.transformers' BERT optimizer, then quantize_dynamic with its defaults."""
    from onnxruntime.quantization import quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    with tempfile.TemporaryDirectory(prefix="hone-bench-") as folder:
        source, fused, target = (Path(folder) / n for n in ("float.onnx", "fused.onnx", "int8.onnx"))
        onnx.save(ir.to_proto(original.ir), source)
        optimize_model(str(source), model_type="bert", num_heads=12, hidden_size=384).save_model_to_file(str(fused))
        # DefaultTensorType: shape inference cannot type the contrib ops the optimizer made.
        quantize_dynamic(str(fused), str(target), extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        return _loaded(original, target, "ORT transformers INT8")


def _loaded(original: Model, path: Path, step: str) -> Model:
    model_ir = ir.load(path)
    ir.external_data.load_to_model(model_ir)
    return original.with_graph(model_ir, step)


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


def session_runner(model: Model, threads: int, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
    session = Session(model, SessionConfig(threads=threads, optimization="all"))
    return lambda: session.run(feeds)


def eager_runner(model: Model, threads: int, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
    import torch

    torch.set_num_threads(threads)
    assert model.torch_factory is not None
    module = model.torch_factory()
    args = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in model.inputs]

    def run() -> object:
        with torch.inference_mode():
            return module(*args)

    return run


def race(runners: dict[str, Callable[[], object]], rounds: int, block_s: float,
         console: Console) -> tuple[dict[str, list[float]], list[float]]:
    """``hone.bench.race`` with the other processes' load recorded and logged per round."""
    loads: list[float] = []
    load = OtherLoad()

    def log_round(index: int, timings: dict[str, list[float]]) -> None:
        nonlocal load
        loads.append(load.cores())
        load = OtherLoad()
        console.log(f"round {index + 1}/{rounds}: " + ", ".join(
            f"{label} {np.median(values[-50:]):.2f} ms" for label, values in timings.items())
            + f"; other processes {loads[-1]:.1f} cores")

    return alternate(runners, rounds=rounds, block_s=block_s, on_round=log_round), loads


def fill_speedups(report: ModelReport) -> ModelReport:
    baseline = next((r for r in report.rows if r.system == report.baseline and r.runs), None)
    for row in report.rows:
        if baseline is not None and row.runs:
            row.speedup_vs_baseline = baseline.p50_ms / row.p50_ms
    return report


def finish(report: ModelReport) -> ModelReport:
    fill_speedups(report)
    winner, baseline, minimum = GOALS[report.model]
    row = next(r for r in report.rows if r.system == winner)
    report.goal = f"{winner} at least {minimum}x faster than {baseline}"
    report.goal_met = row.speedup_vs_baseline is not None and row.speedup_vs_baseline >= minimum
    if report.quantize is not None:
        report.notes.extend(report.quantize.notes)
        report.notes.append(f"hone kept {report.quantize.format}; its own gate measured "
                            f"{report.quantize.speedup or 0:.2f}x vs the float model")
    return report


def table(report: ModelReport) -> Table:
    verdict = {True: "[green]met[/green]", False: "[red]NOT met[/red]", None: "-"}[report.goal_met]
    result = Table(title=f"{report.model}, batch {report.batch}, {report.threads} threads; goal: {report.goal}: "
                         f"{verdict}", caption="; ".join(report.notes) or None)
    for column in ("system", "p50 ms", "runs", f"speedup vs {report.baseline}", "size", "accuracy"):
        result.add_column(column, justify="left" if column in ("system", "accuracy") else "right")
    for row in report.rows:
        result.add_row(row.system, f"{row.p50_ms:.2f}", str(row.runs) if row.runs else "-",
                       "-" if row.speedup_vs_baseline is None else f"{row.speedup_vs_baseline:.2f}x",
                       human_bytes(row.size_bytes), row.accuracy)
    result.add_row("other load per round (cores)", ", ".join(f"{c:.1f}" for c in report.round_other_load_cores),
                   "", "", "", "")
    return result


if __name__ == "__main__":
    main()
