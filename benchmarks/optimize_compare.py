"""hone optimize vs other ONNX optimizers: node counts, agreement with the original, and hone's latency.

Run: .venv/bin/python benchmarks/optimize_compare.py [--models resnet50,minilm,minilm-eager]
     [--threads 2] [--batch 1] [--rounds 12] [--block-s 0.5] [--no-latency]

Needs the benchmark-only tools (not hone dependencies), installed without touching the pins of
requirements.lock (torch, onnx, onnxruntime, numpy):

    .venv/bin/pip install --no-deps -r benchmarks/requirements.txt
    .venv/bin/pip list | grep -iE "torch|onnx|numpy"   # still the versions of requirements.lock

A tool that cannot be imported is reported as "not installable" in the table, never dropped.

Node counts. Every tool gets the same ONNX file (the zoo's export) with its default settings, and
every output is counted the same way (all nodes, subgraphs included, as ``hone info`` counts).
Tools are grouped by what their output may contain, and hone is compared within each group:

- standard ONNX only (runs on any runtime): onnx-simplifier (onnxsim), onnxslim, onnxscript's
  optimizer (``onnxscript.optimizer.optimize``), ``hone.optimize(target="generic")``;
- onnxruntime-specific (``com.microsoft`` contrib ops): onnxruntime's offline optimizer
  (``SessionOptions.optimized_model_filepath`` at ORT_ENABLE_BASIC / ORT_ENABLE_EXTENDED, CPU EP),
  onnxruntime's transformers optimizer (``onnxruntime.transformers.optimizer.optimize_model``,
  model_type "bert" with the heads and hidden size of MiniLM's config, default opt_level; it has
  no model type for CNNs, so resnet50 is n/a), ``hone.optimize(target="ort-cpu")``.
  ORT_ENABLE_ALL's offline output is shown but left out of the goal: it holds NCHWc layout ops
  chosen for this CPU's vector width, and onnxruntime itself warns that it "should only be used
  in the same environment the model was optimized in".

Goal: hone's output has the fewest nodes (a tie counts, and is shown as one) of every tool in its
group on every model, among the outputs that keep the original's answers. An output that changes
them is shown, marked, with where it did, but it is no way to run the model and is not a rival:
onnxruntime's transformers optimizer, for one, turns minilm-eager's attention mask into
"sequence lengths" (mask_index), which is right only for right-padded batches.

Agreement. Each output and the original run in onnxruntime with its graph optimizations off, on
a synthesized batch of 2 (``hone.data.synthesize``, seed 0; minilm at the zoo's sequence 128) and,
for zoo models with real data, on the first 8 real samples (minilm: tokenized sentences padded to
the longest, so the attention mask has zeros), and for models with an ``attention_mask`` input on
the same samples padded on the left instead (as left-padding tokenizers batch). The column shows the worst max abs error over all
outputs and inputs; it is marked when any element misses hone's own tolerance
(|out - ref| <= 1e-4 + 1e-3 |ref|, the tolerance ``hone.optimize`` verifies each pass with).

Latency. For each model, hone's ort-cpu output against the original, both at ORT_DISABLE_ALL and
both at ORT_ENABLE_ALL, on ``--threads`` intra-op threads, batch ``--batch``. onnxruntime's idle
threads spin for a while after a run, so two live sessions are never interleaved run by run:
each session is timed in blocks (hone's bench loop: warm-up runs, then single runs for
``--block-s``), and blocks alternate A B for ``--rounds`` rounds. Before each level the script
waits (up to ``--quiet-wait-s``) for other processes to leave the cores alone, and it measures
how many cores other processes used during each round (machine busy time minus its own CPU
time). The speedup is the median over the quiet rounds (other processes under 0.25 cores) of
(original block median / hone block median), with p50s pooled over the same rounds; with fewer
than 3 quiet rounds it is taken over all rounds and marked busy, and the latency goal is then
reported as undetermined rather than met or not met. Every round's ratio and load is in the JSON.
Goal: minilm at least 1.2x faster at ORT_ENABLE_ALL. Prints the tables and writes
benchmarks/results/optimize-compare-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib
import json
import logging
import subprocess
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import psutil
from rich.console import Console
from rich.table import Table

import hone
from hone.bench.stats import summarize
from hone.bench.sweep import _measure, machine_summary
from hone.data import synthesize, zoo_eval_set
from hone.errors import HoneError
from hone.model import Model
from hone.passes.graph import node_count
from hone.passes.manager import ONNX_STANDARD_DOMAINS
from hone.results import write_json
from hone.runtime import Session, SessionConfig
from hone.verify import compare, tolerance_for

ATOL, RTOL = tolerance_for(np.dtype(np.float32))  # hone.verify's float32 tolerance
REAL_SAMPLES = 8
QUIET_CORES = 0.25  # other processes' CPU use below which the machine counts as quiet
MIN_QUIET_ROUNDS = 3  # quiet rounds needed for a latency verdict
LATENCY_GOAL_MODEL = "minilm"
LATENCY_GOAL_SPEEDUP = 1.2


class NotApplicable(Exception):
    """The tool does not apply to this model (the message says why)."""


@dataclass
class ToolRun:
    """One tool on one model: what it produced and whether that still gives the original's answers."""

    model: str
    tool: str
    group: str  # "standard" | "ort" (what the tool's output may contain)
    # "ok" | "mismatch" | "does_not_run" | "failed" | "n/a" | "not_installable" | "original"
    status: str
    in_goal: bool  # counted when judging the goal of its group
    nodes: int | None = None
    nonstandard_ops: dict[str, int] = field(default_factory=dict)
    seconds: float | None = None  # the tool's own time (hone's includes its per-pass verification)
    max_abs_error_synthetic: float | None = None
    max_abs_error_real: float | None = None
    matches: bool | None = None
    note: str = ""


@dataclass
class NodeGoal:
    """Whether hone has the fewest nodes of its group on one model."""

    model: str
    group: str
    hone_tool: str
    hone_nodes: int | None
    best_other_tool: str | None
    best_other_nodes: int | None
    met: bool
    tie: bool
    note: str = ""


@dataclass
class LatencyCompare:
    """hone's ort-cpu output vs the original at one onnxruntime optimization level, same run."""

    model: str
    optimization: str  # "disabled" | "all"
    batch: int
    threads: int
    nodes_original: int
    nodes_hone: int
    rounds: int
    block_s: float
    # Per round: original block median / hone block median, and the CPU cores other processes
    # kept busy during the round (machine busy time minus this process's CPU time, over wall time).
    round_speedups: list[float]
    round_other_load_cores: list[float]
    # Rounds in which other processes used under QUIET_CORES; the headline numbers come from
    # them when there are at least MIN_QUIET_ROUNDS, else from all rounds and ``reliable`` is false.
    quiet_rounds: int
    reliable: bool
    original_p50_ms: float  # pooled over the headline rounds
    hone_p50_ms: float
    speedup: float  # median of the headline rounds' speedups
    speedup_min: float
    speedup_max: float
    speedup_all_rounds: float  # median over every round, quiet or not
    original_runs: int
    hone_runs: int
    waited_for_quiet_s: float  # how long the benchmark waited for a quiet machine before timing


@dataclass
class OptimizeCompare:
    date: str
    hone_commit: str
    machine: dict[str, str]
    versions: dict[str, str]
    threads: int
    batch: int
    tolerance: dict[str, float]
    tools: list[ToolRun]
    node_goals: list[NodeGoal]
    node_goal_met: bool
    latency: list[LatencyCompare]
    latency_goal: str
    latency_goal_met: bool | None
    notes: list[str]
    seconds: float


# ---------------------------------------------------------------------------------------------
# The tools. Each takes the original Model, the path of its ONNX file and a scratch folder, and
# returns the optimized graph as an onnx-ir model (or raises NotApplicable / anything else).
# ---------------------------------------------------------------------------------------------


def run_onnxsim(model: Model, path: Path, scratch: Path) -> ir.Model:
    import onnxsim

    simplified, _ = onnxsim.simplify(onnx.load(str(path)))  # check_n=0: agreement is checked below
    return ir.from_proto(simplified)


def run_onnxslim(model: Model, path: Path, scratch: Path) -> ir.Model:
    import onnxslim

    return ir.from_proto(onnxslim.slim(onnx.load(str(path))))


def run_onnxscript(model: Model, path: Path, scratch: Path) -> ir.Model:
    import onnxscript.optimizer

    return ir.from_proto(onnxscript.optimizer.optimize(onnx.load(str(path))))


def ort_offline(level: str) -> Callable[[Model, Path, Path], ir.Model]:
    def run(model: Model, path: Path, scratch: Path) -> ir.Model:
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, f"ORT_ENABLE_{level}")
        options.optimized_model_filepath = str(scratch / f"ort-{level.lower()}.onnx")
        options.log_severity_level = 3  # ALL's "hardware specific" warning is in the table's notes
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return ir.load(options.optimized_model_filepath)

    return run


def run_ort_transformers(model: Model, path: Path, scratch: Path) -> ir.Model:
    config = _transformer_config(model)
    if config is None:
        raise NotApplicable("no optimize_model model_type fits a CNN (its types are transformer families)")
    from onnxruntime.transformers.optimizer import optimize_model

    optimizer = optimize_model(str(path), model_type="bert", num_heads=config["num_attention_heads"],
                               hidden_size=config["hidden_size"], use_gpu=False)
    return ir.from_proto(optimizer.model)


def hone_target(target: str) -> Callable[[Model, Path, Path], ir.Model]:
    def run(model: Model, path: Path, scratch: Path) -> ir.Model:
        optimized, report = hone.optimize(model, target=target)
        if report.rolled_back:
            logging.getLogger(__name__).info("hone %s on %s rolled back: %s", target, model.name, report.rolled_back)
        return optimized.ir

    return run


def _transformer_config(model: Model) -> dict[str, int] | None:
    """MiniLM's heads and hidden size, read from the config the zoo builds it from."""
    if not model.name.startswith("minilm"):
        return None
    from hone.zoo.minilm import model_path

    return json.loads((model_path() / "config.json").read_text())


@dataclass(frozen=True)
class Tool:
    name: str
    group: str
    run: Callable[[Model, Path, Path], ir.Model]
    module: str | None = None  # the import it needs, to report "not installable" when missing
    in_goal: bool = True
    note: str = ""


TOOLS: tuple[Tool, ...] = (
    Tool("onnxsim", "standard", run_onnxsim, module="onnxsim"),
    Tool("onnxslim", "standard", run_onnxslim, module="onnxslim"),
    Tool("onnxscript optimizer", "standard", run_onnxscript, module="onnxscript.optimizer"),
    Tool("hone generic", "standard", hone_target("generic")),
    Tool("ORT offline BASIC", "ort", ort_offline("BASIC")),
    Tool("ORT offline EXTENDED", "ort", ort_offline("EXTENDED")),
    Tool("ORT offline ALL", "ort", ort_offline("ALL"), in_goal=False,
         note="ORT_ENABLE_ALL's offline output is hardware-specific (NCHWc layout for this CPU; onnxruntime "
              "warns it should only be used where it was made), so it is shown but not in the goal"),
    Tool("ORT transformers optimizer", "ort", run_ort_transformers, module="onnxruntime.transformers.optimizer"),
    Tool("hone ort-cpu", "ort", hone_target("ort-cpu")),
)
HONE_TOOL = {"standard": "hone generic", "ort": "hone ort-cpu"}
GROUP_TITLES = {"standard": "standard ONNX only", "ort": "onnxruntime-specific"}


# ---------------------------------------------------------------------------------------------
# Agreement with the original
# ---------------------------------------------------------------------------------------------


@dataclass
class Reference:
    """The original's outputs on the synthesized and the real inputs, by output name."""

    feeds: dict[str, list[dict[str, np.ndarray]]]
    outputs: dict[str, list[dict[str, np.ndarray]]]


def reference_for(model: Model, threads: int) -> Reference:
    feeds = {"synthetic": [synthesize(model.inputs, batch=2, dims=model.default_dims, seed=0)]}
    real = _real_inputs(model)
    if real is not None:
        feeds["real"] = [real]
        if "attention_mask" in real:
            feeds["left_padded"] = [_left_padded(real)]
    session = Session(model, SessionConfig(threads=threads, optimization="disabled"))
    outputs = {kind: [dict(zip(session.output_names, session.run(f))) for f in batches]
               for kind, batches in feeds.items()}
    return Reference(feeds, outputs)


def _real_inputs(model: Model) -> dict[str, np.ndarray] | None:
    data = zoo_eval_set(model)
    if data is None:
        return None
    return {key: value[:REAL_SAMPLES] for key, value in data.inputs.items()}


def _left_padded(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same sentences with their padding moved to the left (as left-padding tokenizers emit)."""
    shifted = {name: value.copy() for name, value in feeds.items()}
    for row, length in enumerate(feeds["attention_mask"].sum(axis=1)):
        shift = feeds["attention_mask"].shape[1] - int(length)
        for name, value in feeds.items():
            shifted[name][row] = np.roll(value[row], shift)
    return shifted


def check_agreement(candidate: Model, reference: Reference, threads: int, run: ToolRun) -> None:
    """Fill ``run``'s errors and status from the candidate's outputs against the original's."""
    try:
        session = Session(candidate, SessionConfig(threads=threads, optimization="disabled"))
    except Exception as exc:  # HoneError from onnxruntime, or a graph that does not even serialize
        run.status, run.matches, run.note = "does_not_run", False, f"{type(exc).__name__}: {_first_line(exc)}"
        return
    matches = True
    for kind, batches in reference.feeds.items():
        worst = 0.0
        for feeds, expected in zip(batches, reference.outputs[kind]):
            try:
                produced = dict(zip(session.output_names, session.run(feeds)))
            except HoneError as exc:
                run.status, run.matches, run.note = "does_not_run", False, _first_line(exc)
                return
            missing = sorted(set(expected) - set(produced))
            if missing:
                run.status, run.matches = "mismatch", False
                run.note = f"outputs missing: {', '.join(missing)}"
                return
            names = list(expected)
            comparison = compare([expected[n] for n in names], [produced[n] for n in names], names=names,
                                 reference_label="original", candidate_label=run.tool, atol=ATOL, rtol=RTOL)
            worst = max(worst, comparison.max_abs_error)
            matches = matches and comparison.passed
        if kind == "synthetic":
            run.max_abs_error_synthetic = worst
        else:
            run.max_abs_error_real = max(worst, run.max_abs_error_real or 0.0)
        if not comparison.passed and not run.note:
            run.note = f"changes the answers on the {kind.replace('_', '-')} inputs (max abs error {worst:.3g})"
    run.matches = matches
    run.status = "ok" if matches else "mismatch"


# ---------------------------------------------------------------------------------------------
# Node counts of every tool on one model
# ---------------------------------------------------------------------------------------------


def compare_tools(model: Model, threads: int, console: Console) -> tuple[list[ToolRun], Model | None]:
    """Run every tool on ``model``; returns the runs and hone's ort-cpu output (for latency)."""
    path = Path(model.provenance.get("onnx_cache") or str(model.path))
    reference = reference_for(model, threads)
    runs = [ToolRun(model.name, "original", "original", "original", False, nodes=node_count(model.ir),
                    nonstandard_ops=_nonstandard_ops(model.ir))]
    hone_ort: Model | None = None
    for tool in TOOLS:
        run = ToolRun(model.name, tool.name, tool.group, "failed", tool.in_goal, note=tool.note)
        runs.append(run)
        if tool.module is not None:
            try:
                importlib.import_module(tool.module)
            except ImportError as exc:
                run.status = "not_installable"
                run.note = (f"{type(exc).__name__}: {exc}; install with "
                            "`.venv/bin/pip install --no-deps -r benchmarks/requirements.txt`")
                continue
        console.log(f"{model.name}: {tool.name}")
        began = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory(prefix="hone-compare-") as folder:
                produced = tool.run(model, path, Path(folder))
                ir.external_data.load_to_model(produced)  # nothing may point into the folder after it
        except NotApplicable as exc:
            run.status, run.note = "n/a", str(exc)
            continue
        except Exception as exc:  # a tool failing is a result to report, not a reason to stop
            run.status = "failed"
            run.note = f"{type(exc).__name__}: {_first_line(exc)}"
            logging.getLogger(__name__).debug("%s", traceback.format_exc())
            continue
        run.seconds = time.perf_counter() - began
        run.nodes = node_count(produced)
        run.nonstandard_ops = _nonstandard_ops(produced)
        candidate = model.with_graph(produced, tool.name)
        check_agreement(candidate, reference, threads, run)
        if tool.name == HONE_TOOL["ort"] and run.status in ("ok", "mismatch"):
            hone_ort = candidate
    return runs, hone_ort


def _nonstandard_ops(model_ir: ir.Model) -> dict[str, int]:
    counts = Counter(f"{node.domain}::{node.op_type}" for node in ir.traversal.RecursiveGraphIterator(model_ir.graph)
                     if node.domain not in ONNX_STANDARD_DOMAINS)
    return dict(sorted(counts.items()))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def node_goals(runs: list[ToolRun], models: list[str]) -> list[NodeGoal]:
    goals = []
    for name in models:
        for group, hone_tool in HONE_TOOL.items():
            mine = next(r for r in runs if r.model == name and r.tool == hone_tool)
            # An output that changes the model's answers is not a way to run the model: not a rival.
            others = [r for r in runs if r.model == name and r.group == group and r.tool != hone_tool
                      and r.in_goal and r.nodes is not None and r.status == "ok"]
            best = min(others, key=lambda r: r.nodes or 0, default=None)
            goal = NodeGoal(name, group, hone_tool, mine.nodes, best.tool if best else None,
                            best.nodes if best else None, met=False, tie=False)
            if mine.status != "ok":
                goal.note = f"hone's output: {mine.status}"
            elif best is None:
                goal.met, goal.note = True, "no other tool produced a runnable output"
            else:
                assert mine.nodes is not None and best.nodes is not None
                goal.met = mine.nodes <= best.nodes
                goal.tie = mine.nodes == best.nodes
                if best.status != "ok":
                    goal.note = f"{best.tool}'s output does not match the original"
            goals.append(goal)
    return goals


# ---------------------------------------------------------------------------------------------
# Latency: hone's ort-cpu output vs the original, blocks alternating A B A B
# ---------------------------------------------------------------------------------------------


def compare_latency(original: Model, optimized: Model, *, optimization: str, batch: int, threads: int,
                    rounds: int, block_s: float, quiet_wait_s: float, console: Console) -> LatencyCompare:
    feeds = synthesize(original.inputs, batch=batch, dims=original.default_dims, seed=0)
    waited_s = wait_for_quiet(quiet_wait_s, console)
    sessions = {
        "original": Session(original, SessionConfig(threads=threads, optimization=optimization)),
        "hone": Session(optimized, SessionConfig(threads=threads, optimization=optimization)),
    }
    round_samples: list[dict[str, list[float]]] = []
    ratios, loads = [], []
    for round_index in range(rounds):
        load = OtherLoad()
        samples = {}
        for label, session in sessions.items():  # A then B, every round
            samples[label], _, _ = _measure(lambda s=session: s.run(feeds), rel_tol=0.0, min_runs=5,
                                            max_runs=100_000, warmup_runs=3, budget_s=block_s)
        round_samples.append(samples)
        ratios.append(float(np.median(samples["original"]) / np.median(samples["hone"])))
        loads.append(load.cores())
        console.log(f"{original.name} ORT {optimization} round {round_index + 1}/{rounds}: "
                    f"{np.median(samples['original']):.2f} ms vs {np.median(samples['hone']):.2f} ms, "
                    f"other processes {loads[-1]:.1f} cores")
    del sessions
    gc.collect()
    quiet = [i for i, cores in enumerate(loads) if cores < QUIET_CORES]
    reliable = len(quiet) >= MIN_QUIET_ROUNDS
    headline = quiet if reliable else list(range(rounds))
    pooled = {label: [t for i in headline for t in round_samples[i][label]] for label in ("original", "hone")}
    chosen = [ratios[i] for i in headline]
    return LatencyCompare(
        model=original.name, optimization=optimization, batch=batch, threads=threads,
        nodes_original=node_count(original.ir), nodes_hone=node_count(optimized.ir), rounds=rounds,
        block_s=block_s, round_speedups=ratios, round_other_load_cores=loads, quiet_rounds=len(quiet),
        reliable=reliable, original_p50_ms=summarize(pooled["original"]).p50_ms,
        hone_p50_ms=summarize(pooled["hone"]).p50_ms, speedup=float(np.median(chosen)),
        speedup_min=min(chosen), speedup_max=max(chosen), speedup_all_rounds=float(np.median(ratios)),
        original_runs=len(pooled["original"]), hone_runs=len(pooled["hone"]), waited_for_quiet_s=waited_s,
    )


class OtherLoad:
    """CPU time that processes other than this one use from now on, in cores (0 on a quiet machine)."""

    def __init__(self) -> None:
        self.began = time.perf_counter()
        self.busy, self.own = self._busy(), self._own()

    @staticmethod
    def _busy() -> float:
        times = psutil.cpu_times()
        return times.user + times.nice + times.system + getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0)

    @staticmethod
    def _own() -> float:
        times = psutil.Process().cpu_times()
        return times.user + times.system

    def cores(self) -> float:
        wall = time.perf_counter() - self.began
        other = (self._busy() - self.busy) - (self._own() - self.own)
        return max(other, 0.0) / wall if wall > 0 else 0.0


def wait_for_quiet(max_wait_s: float, console: Console, threshold_cores: float = QUIET_CORES) -> float:
    """Wait (at most ``max_wait_s``) until other processes use under ``threshold_cores``; returns the wait."""
    began = time.perf_counter()
    while True:
        load = OtherLoad()
        time.sleep(1.0)
        busy = load.cores()
        waited = time.perf_counter() - began
        if busy < threshold_cores or waited >= max_wait_s:
            if busy >= threshold_cores:
                console.log(f"machine still busy ({busy:.1f} cores used by other processes); timing anyway")
            return waited
        console.log(f"waiting for the machine to go quiet ({busy:.1f} cores used by other processes)")


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def nodes_table(runs: list[ToolRun], goals: list[NodeGoal], models: list[str], notes: list[str]) -> Table:
    table = Table(title="Node counts (fewer is better) and max abs error vs the original; "
                        "goal: hone has the fewest nodes of its group on every model")
    table.add_column("output may hold")
    table.add_column("tool")
    for name in models:
        table.add_column(f"{name}\nnodes", justify="right")
        table.add_column("max |err|", justify="right")
    by_key = {(r.model, r.tool): r for r in runs}

    def note_ref(text: str) -> str:
        if text not in notes:
            notes.append(text)
        return f"[{notes.index(text) + 1}]"

    def cells(run: ToolRun) -> list[str]:
        if run.status == "original":
            return [str(run.nodes), "-"]
        if run.status in ("n/a", "failed", "not_installable"):
            label = {"n/a": "n/a", "failed": "failed", "not_installable": "not installable"}[run.status]
            return [f"{label} {note_ref(f'{run.tool} on {run.model}: {run.note}')}", ""]
        nodes = str(run.nodes)
        if run.group == "standard" and run.nonstandard_ops:
            nodes += " " + note_ref(f"{run.tool} on {run.model} emitted non-standard ops: {run.nonstandard_ops}")
        if run.status == "does_not_run":
            return [nodes, f"[red]does not run[/] {note_ref(f'{run.tool} on {run.model}: {run.note}')}"]
        worst = max(e for e in (run.max_abs_error_synthetic, run.max_abs_error_real) if e is not None)
        error = f"{worst:.1e}" if worst > 0 else "0"
        if run.status == "mismatch":
            error = f"[red]✗ {error}[/]" + (f" {note_ref(run.note)}" if run.note else "")
        return [nodes, error]

    table.add_row("", "original (zoo export)", *[c for m in models for c in cells(by_key[(m, "original")])],
                  end_section=True)
    for group, title in GROUP_TITLES.items():
        first = True
        for tool in (t for t in TOOLS if t.group == group):
            row = [c for m in models for c in cells(by_key[(m, tool.name)])]
            label = f"{tool.name} {note_ref(tool.note)}" if tool.note else tool.name
            style = "bold" if tool.name == HONE_TOOL[group] else None
            table.add_row(title if first else "", label, *row, style=style)
            first = False
        verdicts = []
        for name in models:
            goal = next(g for g in goals if g.model == name and g.group == group)
            if not goal.met:
                mark = "[red]✗[/]"
                detail = f"{goal.best_other_tool} {goal.best_other_nodes}" if goal.best_other_tool else ""
            elif goal.tie:
                mark, detail = "[green]✓[/]", "tie"
            else:
                mark = "[green]✓[/]"
                detail = f"next {goal.best_other_nodes}" if goal.best_other_nodes is not None else ""
            extra = f" {note_ref(goal.note)}" if goal.note else ""
            verdicts.extend([f"{mark} {detail}{extra}", ""])
        table.add_row("", "[italic]goal: hone fewest[/]", *verdicts, end_section=True)
    return table


def latency_table(rows: list[LatencyCompare], batch: int, threads: int, rounds: int, block_s: float) -> Table:
    table = Table(title=f"hone ort-cpu output vs original: batch {batch}, {threads} threads; blocks of {block_s:g} s "
                        f"alternating A B x {rounds} rounds; speedup = median of per-round ratios (min-max) over "
                        f"the quiet rounds (other processes < {QUIET_CORES} cores), or over all rounds when "
                        f"fewer than {MIN_QUIET_ROUNDS} were quiet (marked busy); p50 pools the same rounds")
    for column in ("model", "nodes", "ORT level", "original p50 ms", "hone p50 ms", "speedup",
                   "quiet rounds", "all rounds", "other load"):
        table.add_column(column, justify="left" if column in ("model", "ORT level") else "right")
    for row in rows:
        speedup = f"{row.speedup:.2f}x ({row.speedup_min:.2f}-{row.speedup_max:.2f})"
        if not row.reliable:
            speedup = f"[yellow]busy[/] {speedup}"
        mean_load = sum(row.round_other_load_cores) / len(row.round_other_load_cores)
        table.add_row(row.model if row.optimization == "disabled" else "",
                      f"{row.nodes_original} -> {row.nodes_hone}" if row.optimization == "disabled" else "",
                      row.optimization, f"{row.original_p50_ms:.2f}", f"{row.hone_p50_ms:.2f}", speedup,
                      f"{row.quiet_rounds}/{row.rounds}", f"{row.speedup_all_rounds:.2f}x",
                      f"{mean_load:.1f} cores", end_section=row.optimization == "all")
    return table


# ---------------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    found = {"hone": hone.__version__}
    for module in ("onnx", "onnxruntime", "onnxsim", "onnxslim", "onnxscript", "onnx_ir", "numpy", "torch"):
        try:
            found[module] = str(importlib.import_module(module).__version__).lstrip("v")
        except ImportError:
            found[module] = "not installed"
    return found


def hone_commit() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,minilm,minilm-eager")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=12, help="A B rounds of timing blocks")
    parser.add_argument("--block-s", type=float, default=0.5, help="seconds per timing block")
    parser.add_argument("--quiet-wait-s", type=float, default=30.0,
                        help="before timing each level, wait up to this long for other processes to go quiet")
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    began = time.perf_counter()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("onnxruntime", "onnxscript", "onnx_ir", "onnxslim"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    ort.set_default_logger_severity(3)
    console = Console(width=170)
    models = args.models.split(",")

    runs: list[ToolRun] = []
    latency: list[LatencyCompare] = []
    notes: list[str] = []
    for name in models:
        model = hone.load(name)
        model_runs, hone_ort = compare_tools(model, args.threads, console)
        runs.extend(model_runs)
        if args.no_latency:
            continue
        if hone_ort is None:
            notes.append(f"latency of {name} not measured: hone ort-cpu produced no runnable output")
            continue
        for optimization in ("disabled", "all"):
            latency.append(compare_latency(model, hone_ort, optimization=optimization, batch=args.batch,
                                           threads=args.threads, rounds=args.rounds, block_s=args.block_s,
                                           quiet_wait_s=args.quiet_wait_s, console=console))
        del model, hone_ort
        gc.collect()

    goals = node_goals(runs, models)
    console.print(nodes_table(runs, goals, models, notes))
    basic_note = _basic_note(runs, models)
    if basic_note:
        notes.append(basic_note)
    node_goal_met = all(g.met for g in goals)
    console.print(f"node-count goal (hone fewest of its group on every model): "
                  f"{'[green]met[/]' if node_goal_met else '[red]not met[/]'}")

    latency_goal = f"{LATENCY_GOAL_MODEL} at least {LATENCY_GOAL_SPEEDUP}x faster at ORT_ENABLE_ALL"
    latency_goal_met: bool | None = None
    if latency:
        console.print(latency_table(latency, args.batch, args.threads, args.rounds, args.block_s))
        row = next((r for r in latency if r.model == LATENCY_GOAL_MODEL and r.optimization == "all"), None)
        if row is not None and row.reliable:
            latency_goal_met = row.speedup >= LATENCY_GOAL_SPEEDUP
            console.print(f"latency goal ({latency_goal}): "
                          f"{'[green]met[/]' if latency_goal_met else '[red]not met[/]'} ({row.speedup:.2f}x "
                          f"over {row.quiet_rounds} quiet rounds)")
        elif row is not None:
            console.print(f"latency goal ({latency_goal}): [yellow]undetermined[/]: only {row.quiet_rounds} of "
                          f"{row.rounds} rounds had a quiet machine; over all rounds {row.speedup:.2f}x "
                          "(other processes shared the cores; rerun on a quiet machine)")
    for index, note in enumerate(notes, start=1):
        console.print(f"[{index}] {note}", markup=False, highlight=False)

    seconds = time.perf_counter() - began
    result = OptimizeCompare(
        date=str(dt.date.today()), hone_commit=hone_commit(), machine=machine_summary(), versions=versions(),
        threads=args.threads, batch=args.batch, tolerance={"atol": ATOL, "rtol": RTOL}, tools=runs,
        node_goals=goals, node_goal_met=node_goal_met, latency=latency, latency_goal=latency_goal,
        latency_goal_met=latency_goal_met, notes=notes, seconds=seconds,
    )
    out = args.out or Path(__file__).parent / "results" / f"optimize-compare-{dt.date.today()}.json"
    write_json(result, out, force=True)
    console.print(f"wrote {out} in {seconds:.0f} s")


def _basic_note(runs: list[ToolRun], models: list[str]) -> str:
    """ORT BASIC's output holds standard ops only; say how hone generic compares with it too."""
    parts = []
    for name in models:
        basic = next((r for r in runs if r.model == name and r.tool == "ORT offline BASIC"), None)
        generic = next((r for r in runs if r.model == name and r.tool == "hone generic"), None)
        if basic is None or generic is None or basic.nodes is None or generic.nodes is None or basic.nonstandard_ops:
            continue
        parts.append(f"{name} {basic.nodes} vs hone generic {generic.nodes}")
    if not parts:
        return ""
    return ("ORT offline BASIC emits standard ops only (grouped with onnxruntime as the tool that made it): "
            + "; ".join(parts))


if __name__ == "__main__":
    main()
