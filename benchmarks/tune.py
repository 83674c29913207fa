"""hone tune's repository against `hone serve` with its defaults and PyTriton with its defaults, under perf_analyzer.

Run: .venv/bin/python benchmarks/tune.py [--models efficientnet_lite0,minilm,magika] [--budget-min 5]
     [--concurrency 1,8,32] [--window-ms 1500] [--trials 3] [--rounds 2]
     [--grid-model efficientnet_lite0 | --no-grid]

Needs: `make perf-analyzer` (perf_analyzer), `make pytriton` (Triton 2.51 through PyTriton) and
`make corpus` (magika, from the public corpus). Everything runs in one run, on this machine, over
loopback; the 2 cores are shared by the server under test and perf_analyzer, for every system alike.

Models and their data (each split into what hone tune sees and a held-out part it never sees):
- ``efficientnet_lite0`` (zoo, real weights): hone tune runs as a user would, on the zoo's own
  data (crops of 12 real photos, split by photo into calibration and evaluation); held out: the
  same crops of 10 other scikit-image photos (clock, coins, moon, page, brick, grass, gravel,
  colorwheel, logo, cell);
- ``minilm`` (zoo, real weights): token ids padded to ``--sequence`` (32: the sentences have 8
  to 30 tokens; at 128 the padded positions' hidden states, which the gate judges like every
  output element, failed dynamic INT8 at cosine min 0.92-0.98); hone tune gets the zoo's 64 English
  sentences, the held-out set is the first sentence of 64 stdlib modules' docstrings;
- ``magika`` (the public corpus: Google's file-type classifier, int32 byte inputs, tf2onnx): the
  byte features (as magika computes them) of files of this Python's stdlib; every third file is
  held out.

For each model:
1. ``hone.tune`` with ``--data`` (the tuning part), ``--budget-min``, ``--concurrency``, a fresh
   cache (the cost is the search's own, nothing resumed): its wall time, points, choice.
2. The held-out gate table: the chosen variant against the original on the held-out part, every
   output judged by the gate of ``hone quantize`` (the budget's defaults).
3. Three servers at once, each on its own ports: ``hone serve REPO`` (the tuned repository),
   ``hone serve MODEL`` (hone's defaults: max batch 32, 2 ms delay, 1 instance, onnxruntime's
   defaults with 2 threads) and PyTriton with PyTriton's defaults (``ModelConfig()``: max batch 4,
   no queue delay, one instance; the callable's onnxruntime session with 2 intra-op threads, which
   is onnxruntime's default on 2 cores). Triton runs the model in PyTriton's Python callable, i.e.
   Triton's Python backend, not its native onnxruntime backend (not on PyPI). At each concurrency,
   perf_analyzer (HTTP, batch 1 per request, real samples of the held-out part) measures the three
   in turn, ``--rounds`` times (A B C A B C): every ratio is between blocks of the same run.

The search's cost against a grid (``--grid-model``, magika: its variants are few and its sessions
quick to build, so the grid fits in minutes): every combination of the same space (the
variants that passed the gate, the base session options and each single change the search tries,
every split of the cores into instances x threads, max batch 4/8/16/32 and a queue delay of 0 or
2 ms) measured at one concurrency (8), ``--grid-seconds-per-level`` each, by the same measurer, then the search run again on that
space at that concurrency with ``--budget-min``; the grid's best and the search's choice are then
measured interleaved (A B A B) so "how close" is a ratio from one comparison. The grid leaves out
combinations of several session-option changes (the search combines winners; the grid tries each
alone) and the search's curve-derived queue delays (the grid has 0 and 2 ms).

Goals (issue 20): on at least two of the three models, the tuned repository >= 1.5x the throughput
of hone's defaults at a p99 no worse (geometric mean over the levels, p99 within 5% at every
level), or >= 1.3x lower p99 at a throughput no worse; on every model, never worse than the
defaults (throughput >= 0.95x and p99 <= 1.05x at every level: 5% is this machine's run-to-run
noise). The search within 5% of the grid's best.

Prints tables and writes benchmarks/results/tune-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from real_models import magika_features
from servelib.perf_analyzer import PerfAnalyzerError, run_perf_analyzer
from servelib.servers import Running, ServerError, hone_server, pytriton_server

import hone
from hone.bench.sweep import machine_summary
from hone.data import attach
from hone.model import Model
from hone.paths import cache_dir
from hone.quantize.gate import Budget, judge, plan_for
from hone.results import to_jsonable, write_json
from hone.samples import SampleSet
from hone.serve.config import served_name
from hone.session_options import SessionOptions
from hone.sources import load
from hone.tune import served_config
from hone.tune.cache import PointCache
from hone.tune.measure import OrtMeasurer
from hone.tune.search import Search, SearchSettings, option_changes
from hone.tune.types import ServerSettings, TunePoint, TuneResult

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / ".cache" / "corpus"
MODELS = ("efficientnet_lite0", "minilm", "magika")
SYSTEMS = ("tuned", "defaults", "pytriton")
CONCURRENCY = (1, 8, 32)
THREADS = 2
SEQUENCE = 32  # --sequence; the sentences are 8 to 30 tokens
GRID_CONCURRENCY = 8
GRID_BATCHES = (4, 8, 16, 32)
GRID_DELAYS_MS = (0.0, 2.0)
NOISE = 0.05
console = Console()


@dataclass
class Workload:
    name: str
    path: Path  # the original .onnx
    tuning: Path  # .npz given to hone tune as --data
    held_out: list[dict[str, np.ndarray]]  # samples (batch 1 each) hone tune never saw
    perf_data: Path  # perf_analyzer --input-data JSON: the held-out samples, without the batch dim
    described: str


@dataclass
class Measurement:
    model: str
    system: str
    concurrency: int
    round: int
    throughput_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    requests: int | None = None
    error: str | None = None


@dataclass
class ModelResult:
    model: str
    data: str
    tune: dict[str, Any] = field(default_factory=dict)
    tune_line: str = ""
    held_out_gate: dict[str, Any] = field(default_factory=dict)
    measurements: list[Measurement] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def main() -> int:
    args = parse_args()
    folder = Path(tempfile.mkdtemp(prefix="hone-tune-bench-"))
    began = time.perf_counter()
    results: list[ModelResult] = []
    tuned: dict[str, tuple[Workload, TuneResult, Path]] = {}
    for name in args.models:
        workload = prepare(name, folder)
        console.rule(f"[bold]{name}[/]: {workload.described}")
        result, repo = run_tune(workload, folder, args)
        tuned[name] = (workload, result, repo)
        entry = ModelResult(name, workload.described, tune=tune_summary(result), tune_line=result.line())
        console.print(result.line())
        entry.held_out_gate = held_out_gate(workload, result, repo)
        entry.measurements = serve_all(workload, repo, folder, args)
        entry.summary = summarize(entry.measurements, args.concurrency)
        results.append(entry)
        show_model(entry, args.concurrency)
    grid = None
    if args.grid_model:
        workload, _, _ = tuned.get(args.grid_model) or (prepare(args.grid_model, folder), None, None)
        grid = grid_against_search(workload, folder, args)
    goals = evaluate(results, grid)
    show_goals(goals)
    out = Path(args.json) if args.json else ROOT / "benchmarks" / "results" / f"tune-{dt.date.today()}.json"
    document = {
        "benchmark": "tune",
        "date": dt.date.today().isoformat(),
        "hone_version": hone.__version__,
        "machine": machine_summary(),
        "command": " ".join(sys.argv),
        "settings": {
            "budget_min": args.budget_min,
            "concurrency": args.concurrency,
            "seconds_per_level": args.seconds_per_level,
            "window_ms": args.window_ms,
            "trials": args.trials,
            "rounds": args.rounds,
            "threads": THREADS,
            "pytriton": "PyTriton 0.7 (Triton 2.51, Python backend) with ModelConfig()'s defaults: max batch 4, "
            "no queue delay, 1 instance; onnxruntime 2 intra-op threads",
            "hone_defaults": "hone serve MODEL: max batch 32, 2 ms queue delay, 1 instance, 2 threads",
        },
        "models": [asdict(r) for r in results],
        "grid": grid,
        "goals": goals,
        "seconds": time.perf_counter() - began,
    }
    write_json(document, out, force=True)
    console.print(f"wrote {out} ({(time.perf_counter() - began) / 60:.1f} min)")
    shutil.rmtree(folder, ignore_errors=True)
    return 0


def parse_args() -> argparse.Namespace:
    global SEQUENCE  # noqa: PLW0603 - one setting the data builders read
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", type=lambda t: [m for m in t.split(",") if m], default=list(MODELS))
    parser.add_argument("--budget-min", type=float, default=5.0)
    parser.add_argument("--concurrency", type=lambda t: [int(c) for c in t.split(",")], default=list(CONCURRENCY))
    parser.add_argument("--seconds-per-level", type=float, default=1.5, help="hone tune's load per level")
    parser.add_argument("--window-ms", type=int, default=1500)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--grid-model", default="magika")
    parser.add_argument("--grid-seconds-per-level", type=float, default=1.0)
    parser.add_argument("--no-grid", dest="grid_model", action="store_const", const="")
    parser.add_argument("--sequence", type=int, default=SEQUENCE, help="minilm's padded token length")
    parser.add_argument("--json", help="where to write the result (default benchmarks/results/tune-<date>.json)")
    args = parser.parse_args()
    SEQUENCE = args.sequence
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {','.join(MODELS)}")
    return args


# -- the workloads and their data ----------------------------------------------------------------


def prepare(name: str, folder: Path) -> Workload:
    path = folder / f"{name}.onnx"
    if name == "efficientnet_lite0":
        model = attach(load(name))
        assert model.samples is not None
        tuning = list(model.samples.samples)
        held = held_out_photos()
        described = (
            f"hone tune on the zoo's own data (its 96 calibration / 96 evaluation crops, no --data), "
            f"{len(held)} crops of {len(HELD_OUT_PHOTOS)} other scikit-image photos held out"
        )
        model.save(path, force=True)
    elif name == "minilm":
        from hone.zoo.minilm import CALIBRATION_SENTENCES, EVAL_SENTENCES

        model = load(name)
        model.save(path, force=True)
        tuning = token_samples([*CALIBRATION_SENTENCES, *EVAL_SENTENCES])
        held = token_samples(docstring_sentences(64))
        described = (
            f"token ids padded to {SEQUENCE}: the zoo's 64 sentences to tune with, 64 stdlib docstring "
            "sentences held out"
        )
    elif name == "magika":
        source = CORPUS / "models" / "magika" / "model.onnx"
        if not source.exists():
            raise SystemExit(f"{source} is missing: run `make corpus`")
        shutil.copy(source, path)
        files = stdlib_files(240)
        features = [{"bytes": magika_features(Path(f).read_bytes())} for f in files]
        tuning = [s for i, s in enumerate(features) if i % 3 != 2]
        held = [s for i, s in enumerate(features) if i % 3 == 2]
        described = f"magika's byte features of {len(files)} stdlib files: {len(tuning)} to tune with, {len(held)} held out"
    else:
        raise ValueError(name)
    tuning_path = folder / f"{name}-tune.npz"
    np.savez(tuning_path, **{key: np.concatenate([s[key] for s in tuning]) for key in tuning[0]})
    perf = folder / f"{name}-perf.json"
    rows = [{key: {"content": value[0].ravel().tolist(), "shape": list(value.shape[1:])} for key, value in s.items()}
            for s in held]  # fmt: skip
    perf.write_text(json.dumps({"data": rows}))
    return Workload(name, path, tuning_path, held, perf, described)


HELD_OUT_PHOTOS = ("clock", "coins", "moon", "page", "brick", "grass", "gravel", "colorwheel", "logo", "cell")


def held_out_photos() -> list[dict[str, np.ndarray]]:
    """The zoo's windows and flips of scikit-image photos the zoo does not use (grey as RGB, RGBA
    without alpha), preprocessed as the zoo's (``hone.zoo.photos``)."""
    import skimage.data

    from hone.imaging import ImagePreprocess
    from hone.zoo.photos import WINDOWS, crop

    preprocess = ImagePreprocess()
    samples = []
    for name in HELD_OUT_PHOTOS:
        pixels = np.asarray(getattr(skimage.data, name)())
        pixels = np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels[..., :3]
        for window in WINDOWS:
            square = crop(pixels, window)
            for view in (square, square[:, ::-1]):
                samples.append({"image": preprocess.preprocess(np.ascontiguousarray(view))[None]})
    return samples


def token_samples(sentences: list[str]) -> list[dict[str, np.ndarray]]:
    from hone.zoo.minilm import tokenize

    tokens = tokenize(tuple(sentences), max_length=SEQUENCE)
    padded = {key: np.pad(value, ((0, 0), (0, SEQUENCE - value.shape[1]))) for key, value in tokens.items()}
    return [{key: value[i : i + 1] for key, value in padded.items()} for i in range(len(sentences))]


def docstring_sentences(count: int) -> list[str]:
    """The first sentence of stdlib modules' docstrings: real English the zoo's sentences are not."""
    import importlib

    names = sorted(sys.stdlib_module_names)
    found: list[str] = []
    for name in names:
        if name.startswith("_") or name in {"antigravity", "this", "idlelib", "turtledemo", "tkinter", "turtle"}:
            continue
        try:
            module = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - platform modules that do not import here are skipped
            continue
        text = " ".join((module.__doc__ or "").split())
        sentence = text.split(". ")[0].strip()
        if 20 <= len(sentence) <= 300 and sentence not in found:
            found.append(sentence)
        if len(found) == count:
            break
    return found


def stdlib_files(count: int) -> list[str]:
    """Files of this Python's stdlib of several kinds (sources, texts, data), spread over the tree."""
    files = sorted(
        f for f in glob.glob(f"{sys.base_prefix}/lib/python3*/**/*.*", recursive=True)
        if not f.endswith((".pyc", ".so")) and "site-packages" not in f and Path(f).is_file()
        and Path(f).stat().st_size > 64
    )  # fmt: skip
    step = max(1, len(files) // count)
    return files[::step][:count]


# -- tuning and the held-out gate ----------------------------------------------------------------


def run_tune(workload: Workload, folder: Path, args: argparse.Namespace) -> tuple[TuneResult, Path]:
    repo = folder / f"{workload.name}-repo"
    last = [0.0]

    def progress(what: str, share: float) -> None:
        if share - last[0] >= 0.1 or share == 0.0:
            last[0] = share
            console.print(f"  [dim]{share:4.0%} {what}[/]")

    result = hone.tune(
        workload.name if workload.name == "efficientnet_lite0" else str(workload.path),
        repo,
        data=None if workload.name == "efficientnet_lite0" else workload.tuning,
        budget_min=args.budget_min,
        concurrency=args.concurrency,
        seconds_per_level=args.seconds_per_level,
        force=True,
        cache=folder / f"{workload.name}-tune.sqlite",
        progress=progress,
    )
    return result, repo


def tune_summary(result: TuneResult) -> dict[str, Any]:
    chosen, defaults = result.chosen, result.defaults
    assert chosen is not None and defaults is not None
    return {
        "seconds": result.seconds,
        "budget_s": result.budget_s,
        "points_measured": result.measured,
        "points_from_cache": result.cached,
        "budget_spent": result.budget_spent,
        "defaults_best": result.defaults_best,
        "chosen": chosen.label,
        "chosen_config": served_config(chosen),
        "variants": [
            {"name": v.name, "passed": v.passed, "accuracy": v.accuracy, "speedup_batch1": v.speedup_batch1,
             "kept": v.kept, "note": v.note}
            for v in result.variants
        ],  # fmt: skip
        "runtime_trials": [
            {"variant": t.variant, "settings": t.settings.label(), "speedup": t.speedup_vs_base, "kept": t.kept}
            for t in result.runtime_trials
        ],  # fmt: skip
        "confirmations": to_jsonable(result.confirmations),
        "notes": result.notes,
    }


def held_out_gate(workload: Workload, result: TuneResult, repo: Path) -> dict[str, Any]:
    """The served model (the chosen variant) against the original on samples hone tune never saw."""
    original = load(str(workload.path))
    original.samples = SampleSet(workload.held_out, "data", f"{len(workload.held_out)} held-out samples",
                                 fixed_split=([], list(range(len(workload.held_out)))))  # fmt: skip
    plan = plan_for(original)
    served = load(str(repo / served_name(original.name) / "1" / "model.onnx"))
    report = judge(served, plan, Budget())
    table = Table(title=f"{workload.name}: the served variant ({result.chosen.variant if result.chosen else '?'}) "
                        f"vs the original on {plan.samples} held-out samples")  # fmt: skip
    for column in ("output", "role", "metric", "value", "threshold", "passed"):
        table.add_column(column)
    for output in report.outputs:
        table.add_row(output.name, output.role, output.metric, f"{output.value:.4f}", output.threshold,
                      "yes" if output.passed else "[red]no[/]")  # fmt: skip
    console.print(table)
    classifiers = {o.name for o in report.outputs if o.role == "classifier"}
    confident = confident_agreement(original, served, workload.held_out, classifiers)
    if confident:
        console.print("  " + "; ".join(
            f"{name}: the float model's top-1 probability >= {CONFIDENT}: {c['confident']} of {c['samples']} samples, "
            f"top-1 agreement on those {_share(c['agreement_confident'])} (on the others {_share(c['agreement_rest'])})"
            for name, c in confident.items()))  # fmt: skip
    return {
        "variant": result.chosen.variant if result.chosen else None,
        "confident": confident,
        "samples": plan.samples,
        "data": plan.data,
        "split": plan.split,
        "passed": report.passed,
        "budget": report.budget,
        "outputs": to_jsonable(report.outputs),
    }


CONFIDENT = 0.5


def confident_agreement(
    original: Model, served: Model, samples: list[dict[str, np.ndarray]], classifiers: set[str]
) -> dict[str, Any]:
    """For each output the gate judged as a classifier (``classifiers``): top-1 agreement split by whether the float model is confident
    (top-1 probability >= CONFIDENT, after a softmax when the output is not probabilities). A flip
    between near-tied classes is what a photo outside the label space gives; a flip of a confident
    answer is what a user sees."""
    from hone.runtime import Session, SessionConfig

    float_session = Session(original, SessionConfig(threads=THREADS))
    served_session = Session(served, SessionConfig(threads=THREADS))
    float_runs = [float_session.run(sample) for sample in samples]
    served_runs = [served_session.run(sample) for sample in samples]
    found: dict[str, Any] = {}
    for index, spec in enumerate(original.outputs):
        if spec.name not in classifiers:
            continue
        reference = np.concatenate([np.asarray(run[index]) for run in float_runs])
        candidate = np.concatenate([np.asarray(run[index]) for run in served_runs])
        if reference.ndim != 2 or not np.issubdtype(reference.dtype, np.floating) or reference.shape[1] < 2:
            continue
        probabilities = reference
        if not np.allclose(reference.sum(axis=1), 1.0, atol=1e-3) or reference.min() < 0:
            shifted = np.exp(reference - reference.max(axis=1, keepdims=True))
            probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        sure = probabilities.max(axis=1) >= CONFIDENT
        agree = reference.argmax(axis=1) == candidate.argmax(axis=1)
        found[spec.name] = {
            "samples": int(len(agree)),
            "confident": int(sure.sum()),
            "agreement_confident": float(agree[sure].mean()) if sure.any() else None,
            "agreement_rest": float(agree[~sure].mean()) if (~sure).any() else None,
            "float_top1_probability_median": float(np.median(probabilities.max(axis=1))),
        }
    return found


# -- serving under perf_analyzer -----------------------------------------------------------------


def serve_all(workload: Workload, repo: Path, folder: Path, args: argparse.Namespace) -> list[Measurement]:
    name = served_name(load(str(workload.path)).name)
    rows: list[Measurement] = []
    with ExitStack() as stack:
        servers: dict[str, Running] = {}
        starts: dict[str, Callable[[], Any]] = {
            "tuned": lambda: hone_server(repo, folder / f"{workload.name}-tuned.log"),
            "defaults": lambda: hone_server(workload.path, folder / f"{workload.name}-defaults.log", "--name", name),
            "pytriton": lambda: pytriton_server(
                workload.path, folder / f"{workload.name}-pytriton.log", name=name, max_batch_size=4,
                max_queue_delay_us=0, instances=1, threads=THREADS,
            ),
        }  # fmt: skip
        for system, start in starts.items():
            try:
                servers[system] = stack.enter_context(start())
            except ServerError as exc:
                console.print(f"  {system}: [red]{exc}[/]")
                rows += [Measurement(workload.name, system, c, r, error=str(exc))
                         for c in args.concurrency for r in range(args.rounds)]  # fmt: skip
        for concurrency in args.concurrency:
            for round_index in range(args.rounds):
                for system, server in servers.items():
                    rows.append(measure(workload, name, system, server, concurrency, round_index, args))
    return rows


def measure(
    workload: Workload, name: str, system: str, server: Running, concurrency: int, round_index: int,
    args: argparse.Namespace,
) -> Measurement:  # fmt: skip
    try:
        result = run_perf_analyzer(
            name,
            server.url("http"),
            "http",
            concurrency,
            window_ms=args.window_ms,
            max_trials=args.trials,
            input_data=str(workload.perf_data),
            timeout_s=60 + 3 * args.trials * args.window_ms / 1000,
        )
    except (PerfAnalyzerError, ServerError) as exc:
        console.print(f"  {system} c={concurrency}: [red]{exc}[/]")
        return Measurement(workload.name, system, concurrency, round_index, error=str(exc))
    row = Measurement(
        workload.name, system, concurrency, round_index, result["throughput_infer_per_s"], result["p50_ms"],
        result["p99_ms"], result["requests"],
    )  # fmt: skip
    console.print(f"  {system:9} c={concurrency:<3} round {round_index}: {row.throughput_per_s:8.0f}/s "
                  f"p50 {row.p50_ms:7.2f} ms p99 {row.p99_ms:7.2f} ms")  # fmt: skip
    return row


def summarize(rows: list[Measurement], levels: list[int]) -> dict[str, Any]:
    """Per system and level: the mean over rounds; per level, each system over the defaults."""
    summary: dict[str, Any] = {"levels": {}}
    for concurrency in levels:
        entry: dict[str, Any] = {}
        for system in SYSTEMS:
            good = [r for r in rows if r.system == system and r.concurrency == concurrency and r.error is None]
            if good:
                entry[system] = {
                    "throughput_per_s": float(np.mean([r.throughput_per_s for r in good])),
                    "p99_ms": float(np.mean([r.p99_ms for r in good])),
                    "p50_ms": float(np.mean([r.p50_ms for r in good])),
                    "rounds": len(good),
                }
        base = entry.get("defaults")
        if base:
            for system in ("tuned", "pytriton"):
                if system in entry:
                    entry[system]["throughput_vs_defaults"] = entry[system]["throughput_per_s"] / base["throughput_per_s"]
                    entry[system]["p99_vs_defaults"] = entry[system]["p99_ms"] / base["p99_ms"]
        summary["levels"][str(concurrency)] = entry
    tuned = [summary["levels"][str(c)].get("tuned", {}) for c in levels]
    if all("throughput_vs_defaults" in t for t in tuned) and tuned:
        summary["tuned_throughput_geomean"] = _geomean([t["throughput_vs_defaults"] for t in tuned])
        summary["tuned_p99_gain_geomean"] = _geomean([1 / t["p99_vs_defaults"] for t in tuned])
        summary["tuned_worst_throughput_ratio"] = min(t["throughput_vs_defaults"] for t in tuned)
        summary["tuned_worst_p99_ratio"] = max(t["p99_vs_defaults"] for t in tuned)
    return summary


# -- the grid --------------------------------------------------------------------------------------


def grid_against_search(workload: Workload, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every point of the space at one concurrency, the search on the same space, then the two
    best measured interleaved."""
    from hone.tune import _fingerprint
    from hone.tune.variants import build_variants

    console.rule(f"[bold]grid[/] on {workload.name} at c={GRID_CONCURRENCY}")
    model = attach(load(str(workload.path)), str(workload.tuning))
    settings = SearchSettings(
        concurrencies=(GRID_CONCURRENCY,), budget_s=math.inf, seconds_per_level=args.grid_seconds_per_level,
        cores=THREADS,
    )
    key = _fingerprint(model, "cpu", THREADS)
    cache = PointCache(folder / f"{workload.name}-tune.sqlite")  # the variants hone tune built (and judged)
    notes: list[str] = []
    reference, variants = build_variants(
        model, budget=Budget(), dims={}, key=key, folder=cache_dir() / "tune-variants", cache=cache, provider="cpu",
        threads=None, clock=time.perf_counter, deadline=math.inf, note=notes.append,
    )  # fmt: skip
    cache.close()
    passing = [reference, *(v for v in variants if v.report.passed)]
    base = SessionOptions(threads=THREADS)
    option_sets = [("base", {})] + list(option_changes(THREADS))
    measurer = OrtMeasurer("cpu")
    points = PointCache(None)
    result = TuneResult(model.name, "throughput", None, [GRID_CONCURRENCY], math.inf)
    search = Search(measurer, points, time.perf_counter, settings, key, result)
    search.started = time.perf_counter()
    began = time.perf_counter()
    grid: list[TunePoint] = []
    defaults = search.point(reference, base, ServerSettings(), "defaults")
    result.defaults = defaults
    for variant in passing:
        for _, change in option_sets:
            options = replace(base, **change)  # type: ignore[arg-type]
            for instances in (1, 2):
                threaded = replace(options, threads=THREADS // instances)
                for batch in GRID_BATCHES:
                    for delay in GRID_DELAYS_MS:
                        server = ServerSettings(max_batch_size=batch, max_queue_delay_ms=delay, instances=instances)
                        point = search.point(variant, threaded, server, "server")
                        search.score(point)
                        grid.append(point)
        console.print(f"  grid: {variant.report.name} done ({len(grid)} points, {time.perf_counter() - began:.0f} s)")
    grid_seconds = time.perf_counter() - began
    measurer.close()
    best = max(grid, key=lambda p: p.score)
    console.print(f"  grid best: {best.label} {best.score:.2f}x the defaults ({len(grid)} points, {grid_seconds:.0f} s)")

    # The search on the same space: hone.tune at the grid's one concurrency, a fresh cache.
    repo = folder / f"{workload.name}-grid-search-repo"
    searched = hone.tune(
        str(workload.path), repo, data=workload.tuning, budget_min=args.budget_min, concurrency=[GRID_CONCURRENCY],
        seconds_per_level=args.grid_seconds_per_level, force=True, cache=folder / f"{workload.name}-grid-search.sqlite",
    )  # fmt: skip
    assert searched.chosen is not None
    console.print(searched.line())

    # The two winners (and the defaults) interleaved: A B A B, same measurer, same load.
    measurer = OrtMeasurer("cpu")
    by_name = {v.report.name: v for v in [reference, *variants]}
    searched_variant = by_name.get(searched.chosen.variant, reference)
    rounds: list[dict[str, float]] = []
    for index in range(3):
        row: dict[str, float] = {}
        for label, variant, point in (
            ("grid", by_name[best.variant], best),
            ("search", searched_variant, searched.chosen),
        ):
            level = measurer.serve(variant.model, point.runtime, point.server, concurrency=GRID_CONCURRENCY,
                                   seconds=max(2.0, args.grid_seconds_per_level))  # fmt: skip
            row[label] = level.throughput_per_s
        rounds.append(row)
        console.print(f"  interleaved round {index}: grid {row['grid']:.0f}/s, search {row['search']:.0f}/s")
    measurer.close()
    ratio = _geomean([r["search"] / r["grid"] for r in rounds])
    return {
        "model": workload.name,
        "concurrency": GRID_CONCURRENCY,
        "space": {
            "variants": [v.report.name for v in passing],
            "session_options": [label for label, _ in option_sets],
            "instances": [1, 2],
            "max_batch_size": list(GRID_BATCHES),
            "max_queue_delay_ms": list(GRID_DELAYS_MS),
        },
        "grid_points": len(grid),
        "grid_seconds": grid_seconds,
        "grid_best": best.label,
        "grid_best_score": best.score,
        "search_seconds": searched.seconds,
        "search_points": searched.measured,
        "search_choice": searched.chosen.label,
        "search_defaults_best": searched.defaults_best,
        "interleaved_rounds": rounds,
        "search_over_grid_throughput": ratio,
        "grid_scores": sorted((p.score for p in grid), reverse=True),
        "variant_notes": notes,
    }


# -- goals and tables -----------------------------------------------------------------------------


def evaluate(results: list[ModelResult], grid: dict[str, Any] | None) -> list[dict[str, Any]]:
    goals: list[dict[str, Any]] = []
    met_models = 0
    for entry in results:
        s = entry.summary
        if "tuned_throughput_geomean" not in s:
            goals.append({"model": entry.model, "goal": "measured", "value": "a system failed", "met": False})
            continue
        throughput = s["tuned_throughput_geomean"] >= 1.5 and s["tuned_worst_p99_ratio"] <= 1 + NOISE
        latency = s["tuned_p99_gain_geomean"] >= 1.3 and s["tuned_worst_throughput_ratio"] >= 1 - NOISE
        met = throughput or latency
        met_models += met
        goals.append({
            "model": entry.model,
            "goal": ">= 1.5x throughput at p99 no worse, or >= 1.3x lower p99 at throughput no worse",
            "value": f"throughput {s['tuned_throughput_geomean']:.2f}x (geomean), p99 {s['tuned_p99_gain_geomean']:.2f}x "
                     f"lower (geomean); worst level: {s['tuned_worst_throughput_ratio']:.2f}x throughput, "
                     f"p99 {s['tuned_worst_p99_ratio']:.2f}x",
            "met": met,
        })  # fmt: skip
        never_worse = s["tuned_worst_throughput_ratio"] >= 1 - NOISE and s["tuned_worst_p99_ratio"] <= 1 + NOISE
        same = bool(entry.tune.get("defaults_best"))
        goals.append({
            "model": entry.model,
            "goal": "never worse than the defaults (5% noise) at any level",
            "value": f"worst throughput {s['tuned_worst_throughput_ratio']:.2f}x, worst p99 {s['tuned_worst_p99_ratio']:.2f}x"
                     + ("; the search answered 'the defaults are best': the tuned repository serves exactly hone's "
                        "defaults, so these ratios are the noise between two servers of the same settings" if same else ""),
            "met": never_worse or same,
        })  # fmt: skip
        goals.append({
            "model": entry.model,
            "goal": "the chosen variant passes the gate on held-out data",
            "value": f"{entry.held_out_gate.get('variant')}: "
                     + ", ".join(f"{o['name']} {o['metric']} {o['value']:.4f}" for o in entry.held_out_gate.get("outputs", [])),
            "met": bool(entry.held_out_gate.get("passed")),
        })  # fmt: skip
    goals.append({"model": "all", "goal": "the throughput/latency goal on at least two models",
                  "value": f"{met_models} of {len(results)}", "met": met_models >= 2})  # fmt: skip
    if grid is not None:
        goals.append({
            "model": grid["model"],
            "goal": "the search within 5% of the grid's best (interleaved)",
            "value": f"{grid['search_over_grid_throughput']:.3f}x the grid best's throughput; search "
                     f"{grid['search_points']} points in {grid['search_seconds']:.0f} s vs grid {grid['grid_points']} "
                     f"points in {grid['grid_seconds']:.0f} s",
            "met": grid["search_over_grid_throughput"] >= 1 - NOISE,
        })  # fmt: skip
    return goals


def show_model(entry: ModelResult, levels: list[int]) -> None:
    table = Table(title=f"{entry.model}: perf_analyzer over HTTP, batch 1 per request, mean of the rounds")
    table.add_column("system")
    for concurrency in levels:
        table.add_column(f"c={concurrency} req/s", justify="right")
        table.add_column("p99 ms", justify="right")
        table.add_column("vs defaults", justify="right")
    for system in SYSTEMS:
        cells = [system]
        for concurrency in levels:
            cell = entry.summary["levels"].get(str(concurrency), {}).get(system)
            if cell is None:
                cells += ["error", "", ""]
                continue
            ratio = (f"{cell['throughput_vs_defaults']:.2f}x / p99 {cell['p99_vs_defaults']:.2f}x"
                     if "throughput_vs_defaults" in cell else "")  # fmt: skip
            cells += [f"{cell['throughput_per_s']:.0f}", f"{cell['p99_ms']:.2f}", ratio]
        table.add_row(*cells)
    console.print(table)


def show_goals(goals: list[dict[str, Any]]) -> None:
    table = Table(title="goals")
    for column in ("model", "goal", "measured", "met"):
        table.add_column(column)
    for goal in goals:
        table.add_row(goal["model"], goal["goal"], goal["value"], "yes" if goal["met"] else "[red]no[/]")
    console.print(table)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


if __name__ == "__main__":
    sys.exit(main())
