"""The end-to-end job behind ``hone run``: its stages in order, each result collected in a RunReport.

Stages today: load -> verify (the model runs and agrees with itself and its PyTorch source) ->
profile (where the time goes and why, at the first batch size) -> optimize (verified graph rewrites
for the provider's onnxruntime target) -> quantize (INT8 candidates behind the accuracy gate, kept
only if measured faster; CPU only) -> bench (the baselines, the optimized model and the kept
quantized model, in one run so the ratios compare) -> serve (a closed-loop load test of the
chosen artifact behind the dynamic batcher, in-process; ``hone.serve.loadtest``) -> web (the
optimized model as a browser bundle in ``<out>/web``: where each op runs on WebGPU, and, where
Chromium is installed, one measured page load: which provider ran, on which adapter, how fast). The job never prints: it reports progress through a callback and the CLI renders it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hone import __version__
from hone.bench import BenchResult, bench
from hone.bench.sweep import merge
from hone.errors import HoneError
from hone.info import ModelInfo, describe
from hone.model import Model, load
from hone.paths import ensure_writable
from hone.passes import OptimizeResult
from hone.passes import optimize as optimize_model
from hone.profile import ProfileResult, profile
from hone.quantize import QuantizeResult
from hone.serve.loadtest import LoadTestResult, load_test
from hone.quantize import quantize as run_quantize
from hone.runtime import default_threads
from hone.verify import VerifyResult, verify_runs
from hone.zoo import DEFAULT_MODEL

logger = logging.getLogger(__name__)

STAGES = ("load", "verify", "profile", "optimize", "quantize", "bench", "serve", "web")
WEB_MAX_ABS_ERROR = 1e-2  # the page's outputs against native onnxruntime's, beyond which the stage fails
WEB_PAGE_RUNS = 2  # timed runs of the page in hone run's web stage (software WebGPU: 14 s a run for resnet18)
SERVE_CONCURRENCIES = (1, 8)
MAX_SERVE_SECONDS_PER_LEVEL = 2.0
DEFAULT_RUN_BATCHES = (1, 8)


@dataclass
class StageResult:
    name: str
    status: str  # "ok" | "failed" | "skipped"
    seconds: float
    message: str = ""


@dataclass
class RunReport:
    hone_version: str
    model: str
    source: str
    started_at: str
    out_dir: str
    # Choices hone made because the user did not (zero config, but said out loud).
    defaults_taken: list[str] = field(default_factory=list)
    stages: list[StageResult] = field(default_factory=list)
    info: ModelInfo | None = None
    verify: VerifyResult | None = None
    profile: ProfileResult | None = None
    optimize: OptimizeResult | None = None
    quantize: QuantizeResult | None = None
    bench: BenchResult | None = None
    serve: LoadTestResult | None = None
    web: "WebStage | None" = None

    @property
    def passed(self) -> bool:
        return all(stage.status in ("ok", "skipped") for stage in self.stages)


@dataclass
class WebStage:
    """The web bundle ``hone run`` wrote: its size, the static WebGPU placement, and the page's own
    report from one load in Chromium (provider, adapter, median_ms, ...; None without Chromium)."""

    path: str
    size_bytes: int
    gzip_bytes: int
    placement: Any  # hone.export.placement.PlacementReport
    page: dict[str, Any] | None = None
    page_note: str = ""


# progress(stage, event, detail): event is "start" | "done" | "failed" | "skipped" | "step".
ProgressCallback = Callable[[str, str, str], None]


def run(
    source: "str | os.PathLike[str] | Model | None" = None,
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
) -> RunReport:
    """Run every stage on ``source`` (default: the zoo's resnet18) and write the report to ``out_dir``."""
    from hone.report.html import write_html

    notify = progress or (lambda stage, event, detail: None)
    out = Path(out_dir)
    json_path = ensure_writable(out / "report.json", force=force)
    html_path = ensure_writable(out / "report.html", force=force)
    if web:
        from hone.export.web import check_folder

        check_folder(out / "web", force)  # before any work, like the report files

    report = RunReport(
        hone_version=__version__,
        model="",
        source=str(source) if source is not None else DEFAULT_MODEL,
        started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
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

    model = _stage(report, notify, "load", lambda: load(source, input_shapes=input_shapes))
    report.model = model.name
    report.info = describe(model)
    report.verify = _stage(
        report, notify, "verify", lambda: verify_runs(model, provider=provider, threads=threads)
    )
    if not report.verify.passed:
        report.stages[-1].status = "failed"
        report.stages[-1].message = "outputs differ between executions; see the verify section"
    report.profile = _stage(
        report,
        notify,
        "profile",
        lambda: profile(model, batch=batches[0], threads=threads, provider=provider),
    )
    target = "ort-cuda" if provider in ("cuda", "tensorrt") else "ort-cpu"
    optimized, report.optimize = _stage(
        report, notify, "optimize", lambda: optimize_model(model, target=target, verify=True)
    )

    quantized, report.quantize = None, None
    if quantize:
        quantized, report.quantize = _quantize_stage(report, notify, model, provider, threads, budget_s)
    else:
        _skip(report, notify, "quantize", "not asked (--no-quantize)")

    def bench_both() -> BenchResult:
        def step(variant: str, batch: int) -> None:
            notify("bench", "step", f"{variant} batch {batch}")

        options = dict(batches=batches, threads=threads, provider=provider, budget_s=budget_s)
        result = bench(model, on_config=step, **options)  # type: ignore[arg-type]
        rewritten = bench(optimized, variants=["ort-disabled", "ort-all"],
                          on_config=lambda v, b: step(f"hone+{v}", b), **options)  # type: ignore[arg-type]
        merge(result, rewritten, "hone")
        if quantized is not None and report.quantize is not None:
            int8 = bench(quantized, variants=["ort-all"],
                         on_config=lambda v, b: step(f"hone-{report.quantize.format}+{v}", b), **options)  # type: ignore[arg-type,union-attr]
            merge(result, int8, f"hone-{report.quantize.format}")
        return result

    report.bench = _stage(report, notify, "bench", bench_both)
    if serve:
        # The chosen artifact: the kept quantized model, else the optimized one. Each concurrency
        # runs for the bench budget, at most MAX_SERVE_SECONDS_PER_LEVEL.
        artifact = f"hone-{report.quantize.format}" if quantized is not None and report.quantize else "hone"
        report.serve = _stage(report, notify, "serve", lambda: load_test(
            quantized if quantized is not None else optimized, artifact=artifact,
            concurrencies=SERVE_CONCURRENCIES, seconds_per_level=min(budget_s, MAX_SERVE_SECONDS_PER_LEVEL),
            threads=threads, provider=provider))
    else:
        _skip(report, notify, "serve", "not asked (--no-serve)")
    if web:
        # From the loaded model: the web target runs its own standard-ops-only optimization. The
        # ort-cpu rewrite above emits onnxruntime contrib ops (FusedConv, ...); onnxruntime-web's
        # WebGPU provider gave resnet18's logits an error of 1.65 on such a graph.
        _web_stage(report, notify, model, out / "web", force)
    else:
        _skip(report, notify, "web", "not asked (--no-web)")
    from hone.results import write_json

    write_json(report, json_path, force=True)  # checked above, before any work was done
    write_html(report, html_path)
    return report


def _quantize_stage(report: RunReport, notify: ProgressCallback, model: Model, provider: str,
                    threads: int, budget_s: float) -> tuple[Model | None, QuantizeResult | None]:
    """INT8 behind the gates on CPU; (kept quantized Model or None, result). Never fails the run:
    a model with nothing to quantize, or another provider, is a skipped stage with its reason."""
    if provider != "cpu":
        _skip(report, notify, "quantize", f"INT8 is measured on the CPU provider only; {provider} was asked")
        return None, None
    notify("quantize", "start", "")
    began = time.perf_counter()
    try:
        kept, result = run_quantize(model, threads=threads, bench_budget_s=budget_s)
    except HoneError as exc:
        _skip(report, notify, "quantize", str(exc), began)
        return None, None
    report.stages.append(StageResult("quantize", "ok", time.perf_counter() - began))
    notify("quantize", "done", "")
    return (kept if result.kept_quantized else None), result


def _web_stage(report: RunReport, notify: ProgressCallback, model: Model, folder: Path, force: bool) -> None:
    """Export the web bundle and open it once in Chromium. Never fails the run: without the
    onnxruntime-web files the stage is skipped, without Chromium the page load is, with the reason."""
    import shutil

    from hone.errors import ProviderUnavailableError
    from hone.export.web import export_web

    notify("web", "start", "")
    began = time.perf_counter()
    try:
        result = export_web(model, folder, force=force, runs=WEB_PAGE_RUNS)
    except ProviderUnavailableError as exc:
        _skip(report, notify, "web", str(exc), began)
        return
    manifest = result.manifest
    report.web = WebStage(path=result.path, size_bytes=manifest.size_bytes, gzip_bytes=manifest.gzip_bytes,
                          placement=manifest.placement)
    if shutil.which("chromium") is None:
        report.web.page_note = "Chromium is not installed (`make browser`): the page was not opened"
    else:
        from hone.export.browser import open_bundle
        from hone.export.web_server import WebServer

        notify("web", "step", "page in Chromium")
        with WebServer(folder) as server:
            page = open_bundle(f"{server.url}?runs={WEB_PAGE_RUNS}")
        report.web.page = {key: page.result.get(key) for key in (
            "provider", "adapter", "fallback_reason", "median_ms", "first_run_ms", "session_ms",
            "max_abs_error_vs_native", "error")}
        error = page.result.get("max_abs_error_vs_native")
        if page.title != "DONE":
            report.web.page_note = f"the page failed: {page.title}"
        elif error is None or error > WEB_MAX_ABS_ERROR:
            report.web.page_note = (f"the page's outputs differ from native onnxruntime by up to {error:.3g} "
                                    f"(more than {WEB_MAX_ABS_ERROR}): check before shipping")
    status = "ok" if not report.web.page_note.startswith("the page") else "failed"
    report.stages.append(StageResult("web", status, time.perf_counter() - began, report.web.page_note or _web_line(report.web)))
    notify("web", "done", "")


def _web_line(web: WebStage) -> str:
    placement = web.placement
    line = f"{placement.webgpu_nodes}/{placement.nodes} nodes on WebGPU, {web.size_bytes / 1e6:.0f} MB bundle"
    page = web.page
    if page and page.get("median_ms") is not None:
        adapter = page.get("adapter") or {}
        software = " (software adapter)" if adapter.get("isFallbackAdapter") else ""
        line += (f"; Chromium ran it on {page['provider']}{software}: median {page['median_ms']:.1f} ms, "
                 f"max abs error vs native {page['max_abs_error_vs_native']:.1e}")
    return line


def _skip(report: RunReport, notify: ProgressCallback, name: str, reason: str, began: float | None = None) -> None:
    seconds = 0.0 if began is None else time.perf_counter() - began
    report.stages.append(StageResult(name, "skipped", seconds, reason))
    notify(name, "skipped", reason)


def _stage(report: RunReport, notify: ProgressCallback, name: str, work: Callable[[], Any]) -> Any:
    notify(name, "start", "")
    began = time.perf_counter()
    try:
        value = work()
    except HoneError as exc:
        report.stages.append(StageResult(name, "failed", time.perf_counter() - began, str(exc)))
        notify(name, "failed", str(exc))
        raise
    report.stages.append(StageResult(name, "ok", time.perf_counter() - began))
    notify(name, "done", "")
    return value
