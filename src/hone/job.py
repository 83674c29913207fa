"""The end-to-end job behind ``hone run``: its stages in order, each result collected in a RunReport.

Stages (``hone.job_types.STAGES``), and what each needs:

- load: the model (a path, zoo name or factory). Every later stage needs it: when load fails, they
  are all skipped and the report says why.
- verify: the model runs and agrees with itself (onnxruntime optimizations off vs on) and with its
  PyTorch source.
- profile: where the time goes and why, at the first batch size.
- optimize: verified graph rewrites for the provider's onnxruntime target.
- quantize: INT8 candidates behind the accuracy gate, kept only if measured faster; CPU only (other
  providers, or a model the quantizer refuses, make it a skipped stage with the reason).
- bench: one interleaved race per batch (``hone.bench.compare``) of the loaded model (torch-eager
  when it has a torch source, ort-disabled, ort-all), the optimized model (when optimize ran) and
  the kept quantized model (when quantize kept one), all with all onnxruntime optimizations; every
  speedup is over the loaded model's ort-all in the same race. The shipped artifact is the fastest
  of (loaded, optimized, quantized) among those faster than the loaded model at every batch, in the
  pooled medians and in every round, else the loaded model (``choose_shipped``): a variant that is
  not faster never ships. Without a bench the loaded model ships, with the reason.
- serve: the tuner in its bounded mode (``hone.tune.tune_serving``) on the shipped model: its
  onnxruntime session options and the server's settings (batcher, instances x threads), every
  point a closed-loop load test through the real batcher at ``SERVE_CONCURRENCIES``, within a
  budget of ``RUN_TUNE_POINTS`` points, the choice confirmed interleaved against ``hone serve``'s
  defaults (which it keeps unless beaten). ``hone tune`` searches the model's variants as well.
- ship-serve: a model repository in ``<out>/serve`` (``<model>/1/model.onnx`` and
  ``<model>/config.json`` with the settings the serve stage chose), read back with the same code
  ``hone serve <out>/serve`` uses.
- web: the loaded model as a browser bundle in ``<out>/web``: where each op runs on WebGPU and,
  where Chromium is installed, one measured page load (provider, adapter, speed). A page that fails,
  or whose outputs differ from native onnxruntime, fails the stage; the bundle stays.
- edge: the edge bundle in ``<out>/edge`` (``hone.export.edge.export_edge``: the smallest INT8
  artifact within the accuracy budget, its manifest, a profile at one thread under a memory cap).

Every stage after load needs only the loaded model, so a failure anywhere else leaves the other
stages running: a failed optimize means bench races the loaded (and quantized) model and serve
ships the loaded one. Any exception fails its stage with one line (a HoneError's message; another
exception's type and first line, with the traceback logged at DEBUG). ``report.json`` is written
whatever happens; ``report.html`` is the caller's to write (``hone.report.html.write_html``, done by
the CLI and ``hone.run``); both paths and the target folders are checked before any work. The job
never prints: it reports progress through a callback.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hone._version import __version__
from hone.errors import HoneError, OptionError, OutputExistsError
from hone.generate.sources import is_generative_source
from hone.job_types import (
    EDGE_FOLDER,
    GENERATE_FOLDER,
    REPORT_HTML,
    REPORT_JSON,
    SERVE_FOLDER,
    STAGES,
    WEB_FOLDER,
    RunOptions,
    RunReport,
    ServeRepositoryStage,
    ShippedChoice,
    StageResult,
    StageStatus,
    WebStage,
)
from hone.model import Model
from hone.paths import ensure_writable
from hone.runtime import default_threads
from hone.serve.config import BatchConfig, served_name
from hone.zoo import DEFAULT_MODEL

if TYPE_CHECKING:  # imported by the stages that need them, when they run
    from hone.bench.types import BenchResult
    from hone.info import ModelInfo
    from hone.passes.types import OptimizeResult
    from hone.quantize.types import QuantizeResult
    from hone.serve.types import LoadTestResult
    from hone.tune.types import TuneResult

logger = logging.getLogger(__name__)

__all__ = ["STAGES", "RunReport", "StageResult", "WebStage", "choose_shipped", "run"]

WEB_MAX_ABS_ERROR = 1e-2  # the page's outputs against native onnxruntime's, beyond which the stage fails
WEB_PAGE_RUNS = 2  # timed runs of the page in hone run's web stage (software WebGPU: 14 s a run for resnet18)
SERVE_CONCURRENCIES = (1, 8)
MAX_SERVE_SECONDS_PER_LEVEL = 2.0
# The serve stage's tuning budget, in points under load at every level (2 s each at most: 64 s).
RUN_TUNE_POINTS = 16
DEFAULT_RUN_BATCHES = (1, 8)
EDGE_PROFILE_S = 1.0  # timed seconds per edge profile process, at most (hone export's default is 2)
BASELINE = "ort-all"  # the bench label every speedup is measured against: the loaded model, all optimizations
BASELINE_DESCRIPTION = "ort-all on the loaded model"

# progress(stage, event, detail): event is "start" | "done" | "failed" | "skipped" | "step".
ProgressCallback = Callable[[str, str, str], None]
T = TypeVar("T")


def run(
    source: str | os.PathLike[str] | Model | None = None,
    *,
    out_dir: str | os.PathLike[str] = "hone-out",
    batches: Sequence[int] | None = None,
    threads: int | None = None,
    provider: str = "cpu",
    input_shapes: Sequence[str] | None = None,
    budget_s: float = 3.0,
    force: bool = False,
    progress: ProgressCallback | None = None,
    quantize: bool = True,
    serve: bool = True,
    web: bool = True,
    edge: bool = True,
    data: str | os.PathLike[str] | None = None,
    dims: dict[str, int] | None = None,
) -> RunReport:
    """Run every stage on ``source`` (default: the zoo's default model), write ``out_dir/report.json``,
    and return the RunReport (render ``report.html`` from it with ``hone.report.html.write_html``).

    ``serve=False`` skips the load test and the model repository, ``web=False`` the web bundle,
    ``edge=False`` the edge bundle, ``quantize=False`` the INT8 stage. ``data`` (``--data``) and
    ``dims`` (``--dim``) are attached to the model at load (``hone.data.attach``), so every stage
    verifies, calibrates, gates and times on those samples.
    """
    notify = progress or (lambda stage, event, detail: None)
    if budget_s <= 0:
        raise OptionError(f"--budget-s must be positive, got {budget_s:g}")
    if batches is not None and (not batches or any(b < 1 for b in batches)):
        raise OptionError(f"batch sizes must be positive integers, got {list(batches)}")
    out = Path(out_dir)
    # Every output is checked before any work, so a refusal comes first, not after minutes.
    json_path = ensure_writable(out / REPORT_JSON, force=force)
    ensure_writable(out / REPORT_HTML, force=force)
    if serve:
        check_output_folder(out / SERVE_FOLDER, force, "the model repository")
    if web:
        check_output_folder(out / WEB_FOLDER, force, "the web bundle")
    if edge:
        check_output_folder(out / EDGE_FOLDER, force, "the edge bundle")
    if source is not None and not input_shapes and is_generative_source(source):
        ensure_writable(out / GENERATE_FOLDER / "model.onnx", force=force)

    report = RunReport(
        hone_version=__version__,
        model="",
        source=str(source) if source is not None else DEFAULT_MODEL,
        started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        out_dir=str(out),
    )
    if source is None:
        report.defaults_taken.append(f"model: {DEFAULT_MODEL} (no MODEL given)")
        source = DEFAULT_MODEL
    if batches is None:
        batches = DEFAULT_RUN_BATCHES
        report.defaults_taken.append(f"batches: {', '.join(map(str, batches))}")
    if threads is None:
        threads = default_threads()
        report.defaults_taken.append(f"threads: {threads} (physical cores)")
    options = RunOptions(
        out=out, batches=tuple(batches), threads=threads, provider=provider, budget_s=budget_s, force=force
    )
    stages = _Stages(report, notify)
    try:
        _run_stages(
            stages,
            source,
            input_shapes,
            options,
            quantize=quantize,
            serve=serve,
            web=web,
            edge=edge,
            data=data,
            dims=dims,
        )
    finally:
        from hone.results import write_json

        write_json(report, json_path, force=True)  # checked above, before any work was done
    return report


def _run_stages(
    stages: _Stages,
    source: str | os.PathLike[str] | Model,
    input_shapes: Sequence[str] | None,
    options: RunOptions,
    *,
    quantize: bool,
    serve: bool,
    web: bool,
    edge: bool,
    data: str | os.PathLike[str] | None = None,
    dims: dict[str, int] | None = None,
) -> None:
    report = stages.report
    if not input_shapes and is_generative_source(source):
        from hone.job_generate import run_generative

        run_generative(stages, source, options, quantize=quantize, serve=serve, data=data)
        return
    loaded = stages.run("load", lambda: _load(source, input_shapes, data, dims))
    if loaded is None:
        for name in STAGES[1:]:
            stages.skip(name, "needs the loaded model, and load failed")
        return
    model, report.info = loaded
    report.model = model.name
    report.data = _data_line(model)
    report.verify = stages.run(
        "verify",
        lambda: _verify(model, options),
        fails=lambda result: (
            None if result.passed else "outputs differ between executions; see the verify section"
        ),
    )
    report.profile = stages.run("profile", lambda: _profile(model, options))
    optimized, report.optimize = stages.run("optimize", lambda: _optimize(model, options)) or (None, None)

    quantized: Model | None = None
    if not quantize:
        stages.skip("quantize", "not asked (--no-quantize)")
    elif options.provider != "cpu":
        stages.skip("quantize", f"INT8 is measured on the CPU provider only; {options.provider} was asked")
    else:
        kept, report.quantize = stages.run("quantize", lambda: _quantize(model, options)) or (None, None)
        quantized = kept if report.quantize is not None and report.quantize.kept_quantized else None

    candidates: list[tuple[str, str, Model]] = [(BASELINE, "loaded", model)]
    if optimized is not None:
        candidates.append(("hone+ort-all", "hone", optimized))
    if quantized is not None and report.quantize is not None:
        candidates.append(
            (f"hone-{report.quantize.format}+ort-all", f"hone-{report.quantize.format}", quantized)
        )
    report.bench = stages.run(
        "bench", lambda: _bench(model, candidates[1:], options, lambda detail: stages.step("bench", detail))
    )
    report.shipped = (
        choose_shipped(report.bench, [(label, artifact) for label, artifact, _ in candidates])
        if report.bench is not None
        else ShippedChoice(
            BASELINE,
            "loaded",
            "no bench result (the bench stage failed), so nothing was "
            "measured faster than the loaded model: the loaded model ships",
        )
    )
    choice = report.shipped
    shipped = next(m for label, _, m in candidates if label == choice.label)
    report.showcase = _showcase(model, shipped)
    report.showcase_artifact = choice.label if report.showcase else ""

    if serve:
        tuned = stages.run(
            "serve",
            lambda: _serve(shipped, choice.label, options, lambda detail: stages.step("serve", detail)),
            done=lambda pair: (
                f"hone tune in bounded mode ({pair[1].budget_s:.0f} s, session and server settings of the "
                f"shipped model): " + pair[1].line().removeprefix("hone tune: ")
            ),
        )
        report.serve, report.serve_tune = tuned or (None, None)
        report.serve_repository = stages.run(
            "ship-serve",
            lambda: _ship_serve(shipped, choice, report.serve_tune, options),
            done=_repository_line,
        )
    else:
        stages.skip("serve", "not asked (--no-serve)")
        stages.skip("ship-serve", "not asked (--no-serve)")
    if web:
        # From the loaded model: the web target runs its own standard-ops-only optimization. The
        # ort-cpu rewrite above emits onnxruntime contrib ops (FusedConv, ...); onnxruntime-web's
        # WebGPU provider gave resnet18's logits an error of 1.65 on such a graph.
        report.web = stages.run(
            "web",
            lambda: _web(model, options, lambda detail: stages.step("web", detail)),
            fails=_web_failure,
            done=lambda result: result.page_note or _web_line(result),
        )
    else:
        stages.skip("web", "not asked (--no-web)")
    if edge:
        report.edge = stages.run("edge", lambda: _edge(model, options), done=_edge_line)
    else:
        stages.skip("edge", "not asked (--no-edge)")


# -- the stages: each takes the model and the options --------------------------------------------


def _load(
    source: str | os.PathLike[str] | Model,
    input_shapes: Sequence[str] | None,
    data: str | os.PathLike[str] | None,
    dims: dict[str, int] | None,
) -> tuple[Model, ModelInfo]:
    """The model with its samples attached; one that cannot run on invented inputs fails here, in one line."""
    from hone.data import attach
    from hone.info import describe
    from hone.sources import load

    model = attach(load(source, input_shapes=input_shapes), None if data is None else str(data), dims)
    return model, describe(model)


def _data_line(model: Model) -> str:
    samples = model.samples
    if samples is None or not samples.samples:
        return "no sample data: inputs invented from the graph (index bounds, batch axis, compared constants)"
    return f"{samples.description}; {samples.split().description}"


SHOWCASE_TOP = 5


def _showcase(model: Model, shipped: Model) -> list:
    """Top-5 classes of the float and the shipped model on the zoo's showcase photos, side by side."""
    from hone.data import zoo_entry
    from hone.job_types import PhotoTop5
    from hone.runtime import Session, SessionConfig

    entry = zoo_entry(model)
    if entry is None or entry.class_names is None or entry.showcase is None:
        return []
    import numpy as np

    names = entry.class_names()
    sessions = [Session(m, SessionConfig(threads=1)) for m in (model, shipped)]
    rows = []
    for photo, pixels in entry.showcase():
        feeds = {model.inputs[0].name: pixels[None].astype(np.float32)}
        tops = []
        for session in sessions:
            logits = np.asarray(session.run(feeds)[0][0], dtype=np.float64)
            probabilities = np.exp(logits - logits.max())
            probabilities /= probabilities.sum()
            order = np.argsort(-probabilities)[:SHOWCASE_TOP]
            tops.append([(names[i].split(", ")[0], round(float(probabilities[i]), 4)) for i in order])
        rows.append(PhotoTop5(photo, tops[0], tops[1]))
    return rows


def _verify(model: Model, options: RunOptions) -> Any:
    from hone.verify import verify_runs

    return verify_runs(model, provider=options.provider, threads=options.threads)


def _profile(model: Model, options: RunOptions) -> Any:
    from hone.profile import profile

    return profile(model, batch=options.batches[0], threads=options.threads, provider=options.provider)


def _optimize(model: Model, options: RunOptions) -> tuple[Model, OptimizeResult]:
    from hone.passes import optimize

    target = "ort-cuda" if options.provider in ("cuda", "tensorrt") else "ort-cpu"
    return optimize(model, target=target, verify=True)


def _quantize(model: Model, options: RunOptions) -> tuple[Model, QuantizeResult]:
    """INT8 behind the gates; a model the quantizer refuses (a HoneError) is a skipped stage."""
    from hone.quantize import quantize

    try:
        return quantize(model, threads=options.threads, bench_budget_s=options.budget_s)
    except HoneError as exc:
        raise _Skipped(str(exc)) from exc


def _bench(
    model: Model, others: Sequence[tuple[str, str, Model]], options: RunOptions, step: Callable[[str], None]
) -> BenchResult:
    """The loaded model's variants and every other candidate (ort-all), raced at each batch."""
    from hone.bench.compare import Contender, applicable_variants, compare

    contenders = [
        Contender(variant, model, variant) for variant in applicable_variants(model, options.provider)
    ]
    contenders += [Contender(label, candidate, "ort-all") for label, _, candidate in others]
    return compare(
        contenders,
        baseline=BASELINE,
        baseline_description=BASELINE_DESCRIPTION,
        batches=options.batches,
        threads=options.threads,
        provider=options.provider,
        budget_s=options.budget_s,
        on_config=lambda label, batch: step(f"{label} batch {batch}"),
    )


def choose_shipped(bench: BenchResult, candidates: Sequence[tuple[str, str]]) -> ShippedChoice:
    """The fastest of ``candidates`` ((bench label, artifact name), the baseline first) by the race.

    A candidate qualifies only when it is faster than the baseline at every batch, both in the
    pooled medians and in every round of the race (so a difference within the noise never counts);
    among those the highest geometric-mean speedup ships. None qualifying: the baseline ships.
    """
    (base_label, base_artifact), others = candidates[0], candidates[1:]
    speedups: dict[str, list[float]] = {}
    every_round: dict[str, bool] = {}
    for label, _ in others:
        configs = [bench.config(label, batch) for batch in bench.batches]
        measured = [c for c in configs if c is not None and c.speedup_vs_baseline is not None]
        if len(measured) == len(configs):
            speedups[label] = [c.speedup_vs_baseline for c in measured]  # type: ignore[misc]
            every_round[label] = all(c.speedup_per_round and min(c.speedup_per_round) > 1.0 for c in measured)
    batches = "/".join(map(str, bench.batches))
    baseline = bench.baseline or base_label

    def said(label: str) -> str:
        text = f"{label} {'/'.join(f'{s:.2f}x' for s in speedups[label])}"
        faster_pooled = all(s > 1.0 for s in speedups[label])
        return text + (", not faster in every round" if faster_pooled and not every_round[label] else "")

    faster = [
        label for label, values in speedups.items() if all(s > 1.0 for s in values) and every_round[label]
    ]
    if not faster:
        measured_text = "; ".join(said(label) for label in speedups) or "no other candidate was measured"
        return ShippedChoice(
            base_label,
            base_artifact,
            (
                f"the loaded model ships: no candidate was faster than {baseline} at every batch ({batches}) "
                f"and in every round of the same race ({measured_text})"
            ),
            speedups,
        )

    def geometric_mean(values: list[float]) -> float:
        product = 1.0
        for value in values:
            product *= value
        return product ** (1.0 / len(values))

    best = max(faster, key=lambda label: geometric_mean(speedups[label]))
    artifact = next(name for label, name in others if label == best)
    rest = [said(label) for label in speedups if label != best]
    return ShippedChoice(
        best,
        artifact,
        (
            f"{said(best)} the speed of {baseline} at batch {batches}, faster in every round of the same "
            f"interleaved race" + (f"; the fastest of the candidates ({'; '.join(rest)})" if rest else "")
        ),
        speedups,
    )


def _serve(
    shipped: Model, label: str, options: RunOptions, step: Callable[[str], None]
) -> tuple[LoadTestResult, TuneResult]:
    """The bounded tuner on the shipped model; the chosen point's levels as the stage's load test.
    Each level runs for the bench budget, at most MAX_SERVE_SECONDS_PER_LEVEL."""
    from hone.serve.types import LoadTestResult
    from hone.tune import tune_serving

    seconds = min(options.budget_s, MAX_SERVE_SECONDS_PER_LEVEL)
    result = tune_serving(
        shipped,
        budget_s=RUN_TUNE_POINTS * len(SERVE_CONCURRENCIES) * seconds,
        concurrency=SERVE_CONCURRENCIES,
        seconds_per_level=seconds,
        cores=options.threads,
        provider=options.provider,
        name=label,
        progress=lambda what, share: step(f"{share:.0%} of the budget: {what}"),
    )
    chosen = result.chosen
    assert chosen is not None  # tune_serving raises when it could not measure the defaults
    measured = LoadTestResult(
        artifact=label,
        max_batch_size=chosen.server.max_batch_size,
        max_queue_delay_ms=chosen.server.max_queue_delay_ms,
        levels=list(chosen.levels),
    )
    return measured, result


def _ship_serve(
    shipped: Model, choice: ShippedChoice, tuned: TuneResult | None, options: RunOptions
) -> ServeRepositoryStage:
    """``<out>/serve/<model>/1/model.onnx`` and ``config.json`` (the serve stage's choice, else
    ``hone serve``'s defaults), read back as ``hone serve`` reads them."""
    from hone.serve.config import CONFIG_FILE, MODEL_FILE, load_repository
    from hone.session_options import SessionOptions
    from hone.tune import served_config
    from hone.tune.types import ServerSettings, TunePoint

    folder = options.out / SERVE_FOLDER
    if folder.exists() and options.force:
        shutil.rmtree(folder)  # checked before any work: a folder, and --force was given
    name = served_name(shipped.name)
    model_path = shipped.save(folder / name / "1" / MODEL_FILE)
    point = (
        tuned.chosen
        if tuned is not None and tuned.chosen is not None
        else TunePoint(choice.label, SessionOptions(threads=options.threads), ServerSettings(), "defaults")
    )
    config = served_config(point)
    config_path = folder / name / CONFIG_FILE
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    entries = load_repository(folder)  # the layout and config.json, validated as `hone serve` does
    expected = BatchConfig(
        max_batch_size=point.server.max_batch_size,
        max_queue_delay_ms=point.server.max_queue_delay_ms,
        preferred_batch_sizes=point.server.preferred_batch_sizes,
    )
    read = [(e.name, e.version, e.batch, e.instances, e.session) for e in entries]
    if read != [(name, "1", expected, point.server.instances, point.runtime)]:
        raise HoneError(f"{folder} reads back as {entries}, not as {name} version 1 with the chosen settings")
    size = sum(p.stat().st_size for p in model_path.parent.iterdir() if p.is_file())
    note = "" if tuned is not None else "the serve stage did not measure these settings (it did not run)"
    return ServeRepositoryStage(
        path=str(folder),
        model_name=name,
        model_path=str(model_path),
        config_path=str(config_path),
        size_bytes=size,
        artifact=choice.label,
        config=config,
        measured=tuned is not None,
        note=note,
    )


def _repository_line(repository: ServeRepositoryStage) -> str:
    config = repository.config
    line = (
        f"{repository.path}: {repository.model_name} v1 ({repository.artifact}), "
        f"max batch {config['max_batch_size']}, queue delay {config['max_queue_delay_ms']:g} ms, "
        f"{config.get('instances', 1)} instance(s), session {config.get('session', {})}"
    )
    return line + ("; chosen by the serve stage" if repository.measured else f"; {repository.note}")


def _web(model: Model, options: RunOptions, step: Callable[[str], None]) -> WebStage:
    """Export the web bundle and open it once in Chromium. Without the onnxruntime-web files the
    stage is skipped; without Chromium the page load is, with the reason; a page that fails to run
    (Chromium not starting included) is a note on the bundle, and fails the stage."""
    from hone.errors import ProviderUnavailableError
    from hone.export.web import export_web

    folder = options.out / WEB_FOLDER
    try:
        result = export_web(model, folder, force=options.force, runs=WEB_PAGE_RUNS)
    except ProviderUnavailableError as exc:
        raise _Skipped(str(exc)) from exc
    manifest = result.manifest
    web = WebStage(
        path=result.path,
        size_bytes=manifest.size_bytes,
        gzip_bytes=manifest.gzip_bytes,
        placement=manifest.placement,
    )
    if shutil.which("chromium") is None:
        web.page_note = "Chromium is not installed (`make browser`): the page was not opened"
        web.page_outcome = "not-opened"
        return web
    from hone.export.browser import open_bundle
    from hone.export.web_server import WebServer

    step("page in Chromium")
    try:
        with WebServer(folder) as server:
            page = open_bundle(f"{server.url}?runs={WEB_PAGE_RUNS}")
    except HoneError as exc:
        web.page_note = f"the page did not run: {exc}"
        web.page_outcome = "did-not-run"
        return web
    web.page = {
        key: page.result.get(key)
        for key in (
            "provider",
            "adapter",
            "fallback_reason",
            "median_ms",
            "first_run_ms",
            "session_ms",
            "max_abs_error_vs_native",
            "error",
        )
    }
    error = page.result.get("max_abs_error_vs_native")
    if page.title != "DONE":
        web.page_note = f"the page failed: {page.title}"
        web.page_outcome = "failed"
    elif error is None or error > WEB_MAX_ABS_ERROR:
        shown = "an unknown amount" if error is None else f"up to {error:.3g}"
        web.page_note = (
            f"the page's outputs differ from native onnxruntime by {shown} "
            f"(more than {WEB_MAX_ABS_ERROR}): check before shipping"
        )
        web.page_outcome = "differs"
    return web


def _web_failure(web: WebStage) -> str | None:
    return web.page_note if web.page_failed else None


def _web_line(web: WebStage) -> str:
    placement = web.placement
    line = f"{placement.webgpu_nodes}/{placement.nodes} nodes on WebGPU, {_size(web.size_bytes)} bundle"
    page = web.page
    if page and page.get("median_ms") is not None:
        adapter = page.get("adapter") or {}
        software = " (software adapter)" if adapter.get("isFallbackAdapter") else ""
        line += (
            f"; Chromium ran it on {page['provider']}{software}: median {page['median_ms']:.1f} ms, "
            f"max abs error vs native {page['max_abs_error_vs_native']:.1e}"
        )
    return line


def _edge(model: Model, options: RunOptions) -> Any:
    """The edge bundle, as ``hone export --target edge`` writes it, with a shorter profile."""
    from hone.export.edge import export_edge

    return export_edge(
        model, options.out / EDGE_FOLDER, force=options.force, profile_s=min(options.budget_s, EDGE_PROFILE_S)
    )


def _edge_line(edge: Any) -> str:
    manifest, profile = edge.manifest, edge.profile
    line = (
        f"{edge.path}: {manifest.format}, {_size(manifest.size_bytes)} ({_size(manifest.gzip_bytes)} gzip'd)"
    )
    if profile.artifact.fits and profile.artifact.p50_ms is not None:
        line += f"; 1 thread p50 {profile.artifact.p50_ms:.2f} ms"
        if profile.float_model.fits and profile.float_model.p50_ms is not None:
            line += f" (fp32 {profile.float_model.p50_ms:.2f} ms)"
    return line


def _size(count: int) -> str:
    return f"{count / 1e3:.1f} kB" if count < 1e6 else f"{count / 1e6:.1f} MB"


def check_output_folder(folder: Path, force: bool, what: str) -> None:
    """Refuse a path that is a file, or a non-empty folder without ``force`` (then it is replaced)."""
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(
            f"{folder} exists and is not a folder; {what} is written there", path=str(folder)
        )
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise OutputExistsError(
            f"{folder} is not empty; pass --force to replace {what} or choose another --out", path=str(folder)
        )


# -- running a stage ------------------------------------------------------------------------------


class _Skipped(Exception):
    """Raised by a stage that cannot apply here (not a failure): the message is the reason."""


class _Stages:
    """Runs each stage, records its StageResult, and tells the progress callback."""

    def __init__(self, report: RunReport, notify: ProgressCallback) -> None:
        self.report = report
        self.notify = notify

    def run(
        self,
        name: str,
        work: Callable[[], T],
        *,
        fails: Callable[[T], str | None] | None = None,
        done: Callable[[T], str] | None = None,
    ) -> T | None:
        """``work()``'s value, or None when it raised. ``fails(value)``: a reason the stage failed
        although it returned; ``done(value)``: the summary line of a stage that passed."""
        self.notify(name, "start", "")
        began = time.perf_counter()
        try:
            value = work()
        except _Skipped as exc:
            self.skip(name, str(exc), began)
            return None
        except Exception as exc:  # any failure fails this stage only; the report goes on
            reason = failure_reason(exc)
            logger.debug("stage %s failed: %s", name, reason, exc_info=not isinstance(exc, HoneError))
            self._record(name, "failed", began, reason)
            return None
        failed = fails(value) if fails is not None else None
        if failed:
            self._record(name, "failed", began, failed)
        else:
            self._record(name, "ok", began, self._summary(name, done, value))
        return value

    @staticmethod
    def _summary(name: str, done: Callable[[T], str] | None, value: T) -> str:
        """The summary line of a stage that passed; a summary that cannot be built costs only itself."""
        if done is None:
            return ""
        try:
            return done(value)
        except Exception:
            logger.debug("stage %s: no summary line", name, exc_info=True)
            return ""

    def skip(self, name: str, reason: str, began: float | None = None) -> None:
        seconds = 0.0 if began is None else time.perf_counter() - began
        self.report.stages.append(StageResult(name, "skipped", seconds, reason))
        self.notify(name, "skipped", reason)

    def step(self, name: str, detail: str) -> None:
        self.notify(name, "step", detail)

    def _record(self, name: str, status: StageStatus, began: float, message: str) -> None:
        self.report.stages.append(StageResult(name, status, time.perf_counter() - began, message))
        self.notify(name, "done" if status == "ok" else status, message)


def failure_reason(exc: BaseException) -> str:
    """One line: a HoneError's message as it is; any other exception's type and first line."""
    if isinstance(exc, HoneError):
        return str(exc)
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
