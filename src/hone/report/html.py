"""The HTML report: one self-contained file (styles inline, plots as data: URIs) that opens offline.

It renders a RunReport; every number in it comes from the report's dataclasses. A report of a run
whose stages failed renders too: each section is drawn only from the results that exist, and a
section whose rendering fails says so in its place instead of losing the file.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from hone.bench.types import BenchResult
from hone.job_types import GenerativeRun, PhotoTop5, RunReport, ServeRepositoryStage, ShippedChoice, WebStage
from hone.report.markup import image, table
from hone.report.plots import (
    bench_latency_png,
    breakdown_figure,
    figure_bytes,
    op_counts_png,
    roofline_figure,
)
from hone.report.terminal import accuracy_text, human_bytes, output_detail, value_range
from hone.results import Noted

if TYPE_CHECKING:
    from hone.export.types import EdgeResult
    from hone.info import ModelInfo
    from hone.passes.types import OptimizeResult
    from hone.profile.types import ProfileResult
    from hone.quantize.types import QuantizeResult
    from hone.serve.types import LoadTestResult
    from hone.tune.types import TuneResult
    from hone.verify import VerifyResult

logger = logging.getLogger(__name__)
T = TypeVar("T")

_STYLE = """
body { font-family: -apple-system, system-ui, sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } .sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6rem 0 1.4rem; font-size: 0.9rem; }
th, td { border: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.ok { color: #1a7f37; font-weight: 600; } .failed { color: #cf222e; font-weight: 600; }
.warn { color: #9a6700; } img { max-width: 100%; border: 1px solid #eee; }
code { background: #f6f8fa; padding: 0 0.2rem; }
"""


def write_html(report: RunReport, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(report), encoding="utf-8")
    return target


def render_html(report: RunReport) -> str:
    e = html.escape
    title = report.model or report.source
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>hone report: {e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>hone report: {e(title)}</h1>",
        (
            f"<p class='sub'>source <code>{e(report.source)}</code> · started {e(report.started_at)} · "
            f"hone {e(report.hone_version)} · overall "
            f"<span class='{'ok' if report.passed else 'failed'}'>"
            f"{'passed' if report.passed else 'FAILED'}</span></p>"
        ),
        "<h2 id='stages'>Stages</h2>",
        table(
            ("stage", "status", "seconds", "message"),
            [(s.name, _status(s.status), f"{s.seconds:.2f}", e(s.message)) for s in report.stages],
            escape=False,
        ),
    ]
    if report.data:
        parts.append(f"<p><b>Sample data</b>: {e(report.data)}</p>")
    if report.defaults_taken:
        parts.append("<h2 id='defaults'>Defaults taken</h2><ul>")
        parts.extend(f"<li>{e(item)}</li>" for item in report.defaults_taken)
        parts.append("</ul>")
    _add(parts, "model", report.info, _model_section)
    _add(parts, "verify", report.verify, _verify_section)
    _add(parts, "profile", report.profile, _profile_section)
    _add(parts, "optimize", report.optimize, lambda result: _optimize_section(result, report.bench))
    _add(parts, "quantize", report.quantize, _quantize_section)
    _add(parts, "bench", report.bench, lambda result: _bench_section(result, report.shipped))
    _add(parts, "shipped", report.shipped, _shipped_section)
    _add(parts, "serve", report.serve, lambda result: _serve_section(result, report.serve_tune))
    _add(
        parts, "ship-serve", report.serve_repository, lambda result: _repository_section(result, report.serve)
    )
    _add(parts, "web", report.web, lambda result: "\n".join(_web_section(result)))
    _add(parts, "edge", report.edge, _edge_section)
    _add(parts, "generate", report.generate, _generate_section)
    _add(
        parts,
        "showcase",
        report.showcase or None,
        lambda rows: _showcase_section(rows, report.showcase_artifact),
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def _add(parts: list[str], name: str, result: T | None, render: Callable[[T], str]) -> None:
    """The section of a stage that has a result (a stage without one has no section)."""
    if result is not None:
        parts.append(_guarded(name, lambda: render(result)))


def _guarded(name: str, render: Callable[[], str]) -> str:
    """A section, or one line saying why it could not be drawn: a rendering bug never costs the file."""
    try:
        return render()
    except Exception as exc:
        logger.debug("report section %s failed to render", name, exc_info=True)
        lines = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
        return (
            f"<h2 id='{html.escape(name)}'>{html.escape(name)}</h2>"
            f"<p class='failed'>this section could not be rendered ({html.escape(reason)})</p>"
        )


def _model_section(info: ModelInfo) -> str:
    parts = ["<h2 id='model'>Model</h2>"]
    rows = [
        ("file size", human_bytes(info.file_size_bytes)),
        ("opsets", ", ".join(f"{d or 'ai.onnx'}={v}" for d, v in info.opset_imports.items())),
        ("nodes", str(info.node_count)),
        ("parameters", f"{info.parameter_count:,} ({human_bytes(info.parameter_bytes)})"),
        ("producer", info.producer or "-"),
        *((k, v) for k, v in info.provenance.items()),
    ]
    parts.append(table(("field", "value"), rows))
    io_rows = [
        (kind, t.name, t.dtype, "[" + ", ".join("?" if d is None else str(d) for d in t.shape) + "]")
        for kind, tensors in (("input", info.inputs), ("output", info.outputs))
        for t in tensors
    ]
    parts.append(table(("kind", "name", "dtype", "shape"), io_rows))
    parts.append(image(op_counts_png(info.op_counts, "nodes by op type"), "nodes by op type"))
    return "\n".join(parts)


def _verify_section(verify: VerifyResult) -> str:
    e = html.escape
    parts = [
        "<h2 id='verify'>Verify</h2>",
        (
            f"<p>batch {verify.batch}; outputs finite: {'yes' if verify.finite else 'NO'}; "
            "tolerance |Δ| ≤ atol + rtol·|ref|</p>"
        ),
    ]
    rows = [
        (
            e(c.reference),
            e(c.candidate),
            e(o.name),
            f"{o.max_abs_error:.2e}",
            f"{o.max_rel_error:.2e}",
            f"{o.cosine:.6f}",
            "-" if o.top1_agreement is None else f"{100 * o.top1_agreement:.1f}%",
            f"{c.atol:g} / {c.rtol:g}",
            _status("ok" if o.passed else "failed"),
        )
        for c in verify.comparisons
        for o in c.outputs
    ]
    parts.append(
        table(
            (
                "reference",
                "candidate",
                "output",
                "max abs err",
                "max rel err",
                "cosine",
                "top-1 agree",
                "atol / rtol",
                "ok",
            ),
            rows,
            escape=False,
        )
    )
    return "\n".join(parts)


def _bench_section(result: BenchResult, shipped: ShippedChoice | None) -> str:
    e = html.escape
    baseline = result.baseline or next(
        (c.baseline_variant for c in result.configs if c.baseline_variant), None
    )
    parts = [
        "<h2 id='bench'>Benchmark</h2>",
        f"<p>{e(result.provider)}, {result.threads} threads. At each batch every configuration ran in"
        f" {e(result.method)} blocks in one process (one block each per round, up to {result.rounds} rounds,"
        f" {result.budget_s:g}s each in all), until every median's 95% CI was within"
        f" ±{100 * result.rel_tol:.0f}%. "
        + (
            f"Speedup = p50 of <b>{e(baseline)}</b> / p50, same batch, same race; by round: the same ratio "
            "round by round (lowest-highest). "
            if baseline
            else ""
        )
        + f"Machine: {e(', '.join(f'{k} {v}' for k, v in result.machine.items()))}.</p>",
    ]
    rows = [
        (
            e(c.variant)
            + (" <b>(shipped)</b>" if shipped is not None and c.variant == shipped.label else ""),
            str(c.batch),
            f"{c.p50_ms:.3f}",
            f"{c.p90_ms:.3f}",
            f"{c.p99_ms:.3f}",
            f"{c.iqr_ms:.3f}",
            f"{c.throughput:,.1f}",
            "-" if c.speedup_vs_baseline is None else f"{c.speedup_vs_baseline:.2f}x",
            value_range(c.speedup_per_round, "{:.2f}", "x"),
            value_range(c.round_p50_ms, "{:.3f}"),
            f"{c.peak_rss_mb:.0f}",
            f"{c.peak_mem_mb:.1f}",
            str(c.runs),
            (
                "<span class='ok'>yes</span>"
                if c.stable
                else f"<span class='warn'>no (±{100 * c.median_ci_rel:.1f}%)</span>"
            ),
        )
        for c in result.configs
    ]
    parts.append(
        table(
            (
                "variant",
                "batch",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "IQR ms",
                "samples/s",
                "speedup",
                "speedup by round",
                "round p50s ms",
                "RSS peak MB",
                "+MB",
                "runs",
                "stable",
            ),
            rows,
            escape=False,
        )
    )
    parts.append(image(bench_latency_png(result), "latency and throughput by variant and batch"))
    return "\n".join(parts)


def _shipped_section(shipped: ShippedChoice) -> str:
    e = html.escape
    return (
        f"<h2 id='shipped'>Shipped artifact</h2><p><b>{e(shipped.label)}</b> ({e(shipped.artifact)}): "
        f"{e(shipped.reason)}. The serve stage and the model repository use it; the web and edge bundles "
        "start from the loaded model (each target optimizes and quantizes for itself).</p>"
    )


def _serve_section(serve: LoadTestResult, tuned: TuneResult | None) -> str:
    e = html.escape
    parts = [
        "<h2 id='serve'>Serving</h2>",
        (
            f"<p>{e(serve.artifact)} behind the dynamic batcher (max batch {serve.max_batch_size}, queue"
            f" delay {serve.max_queue_delay_ms:g} ms), closed-loop single-sample requests, in-process.</p>"
        ),
    ]
    if tuned is not None:
        parts.append(f"<p>{e(tuned.line())}</p>")
        parts += [f"<p class='note'>{e(note)}</p>" for note in tuned.notes]
    rows = [
        (
            str(level.concurrency),
            str(level.requests),
            str(level.failures),
            f"{level.p50_ms:.3f}",
            f"{level.p99_ms:.3f}",
            f"{level.throughput_per_s:,.1f}",
            ", ".join(f"{size}: {count}" for size, count in sorted(level.batch_sizes.items())),
        )
        for level in serve.levels
    ]
    parts.append(
        table(
            ("concurrency", "requests", "failures", "p50 ms", "p99 ms", "requests/s", "batch size: batches"),
            rows,
        )
    )
    if tuned is not None and tuned.points:
        parts.append(
            "<p>Every point the serve stage measured (score: its throughput over the defaults'):</p>"
        )
        parts.append(
            table(
                (
                    "stage",
                    "session",
                    "server",
                    *(f"c={c} req/s | p99 ms" for c in tuned.concurrencies),
                    "score",
                ),
                (
                    (
                        point.stage,
                        point.runtime.label(),
                        point.server.label(),
                        *(
                            f"{lv.throughput_per_s:,.0f} | {lv.p99_ms:.2f}" if lv is not None else "-"
                            for lv in (point.level(c) for c in tuned.concurrencies)
                        ),
                        f"{point.score:.2f}x" if point.score else "-",
                    )
                    for point in tuned.points
                ),
            )
        )
    return "\n".join(parts)


def _repository_section(repository: ServeRepositoryStage, serve: LoadTestResult | None) -> str:
    e = html.escape
    measured = (
        "the serve stage chose and measured these settings: see Serving"
        if repository.measured and serve is not None
        else e(repository.note or "not measured")
    )
    rows = [
        ("path", f"<code>{e(repository.path)}</code>"),
        (
            "model",
            (
                f"<code>{e(repository.model_path)}</code> ({human_bytes(repository.size_bytes)}): "
                f"{e(repository.artifact)}"
            ),
        ),
        (
            "config.json",
            "<code>" + e(", ".join(f"{k}: {v}" for k, v in repository.config.items())) + "</code>",
        ),
        ("measured", measured),
        ("serve it", f"<code>hone serve {e(repository.path)}</code>"),
    ]
    return "<h2 id='ship-serve'>Model repository</h2>\n" + table(("", ""), rows, escape=False)


def _edge_section(edge: EdgeResult) -> str:
    e = html.escape
    manifest, profile = edge.manifest, edge.profile
    parts = [
        "<h2 id='edge'>Edge bundle</h2>",
        (
            f"<p><code>{e(edge.path)}</code>: {e(', '.join(Path(f).name for f in edge.files))}; the artifact"
            f" is <b>{e(manifest.format)}</b>"
            f"{'' if manifest.sparsity is None else f', {manifest.sparsity:.0%} sparse'},"
            f" {human_bytes(manifest.size_bytes)} ({human_bytes(manifest.gzip_bytes)} gzip'd), from"
            f" {human_bytes(manifest.float_size_bytes)} fp32. Measured in fresh processes at"
            f" {profile.intra_op_threads} thread, batch {profile.batch}, under a memory cap of"
            f" +{profile.memory_cap_mb} MB over an idle process ({profile.idle_rss_mb:.0f} MB RSS).</p>"
        ),
    ]
    accuracy = manifest.accuracy
    rows = []
    for label, run, judged in (
        ("fp32", profile.float_model, "reference"),
        (
            manifest.format,
            profile.artifact,
            "the float model" if accuracy is None else accuracy_text(accuracy),
        ),
    ):
        if run.fits:
            rows.append(
                (
                    label,
                    _number(run.p50_ms, "{:.3f}"),
                    _number(run.p90_ms, "{:.3f}"),
                    _number(run.peak_rss_mb, "{:.0f}"),
                    _number(run.session_create_ms, "{:.0f}"),
                    judged,
                )
            )
        else:
            rows.append((label, "over the cap", "-", "-", "-", judged))
    parts.append(table(("model", "p50 ms", "p90 ms", "peak RSS MB", "session ms", "accuracy"), rows))
    parts.extend(_notes(manifest))
    return "\n".join(parts)


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _web_section(web: WebStage) -> list[str]:
    """The browser bundle: what runs where on WebGPU (static check) and what one page load measured."""
    e = html.escape
    placement = web.placement
    parts = [
        "<h2 id='web'>Web bundle</h2>",
        (
            f"<p>{e(web.path)}: {web.size_bytes / 1e6:.1f} MB ({web.gzip_bytes / 1e6:.1f} MB gzip'd),"
            f" onnxruntime-web {e(placement.ort_web_version)}; open it with <code>hone serve-web"
            f" {e(web.path)}</code>.</p>"
        ),
        f"<p>{e(placement.summary())}</p>",
    ]
    page = web.page
    if page and not page.get("error"):
        adapter = page.get("adapter") or {}
        software = " (software adapter: not GPU speed)" if adapter.get("isFallbackAdapter") else ""
        where = (
            f"WebGPU on {adapter.get('vendor', '')} {adapter.get('architecture', '')}{software}"
            if page.get("provider") == "webgpu"
            else "WASM (CPU)"
        )
        rows = [
            ("ran on", where),
            ("median ms", _number(page.get("median_ms"), "{:.2f}")),
            ("first run ms", _number(page.get("first_run_ms"), "{:.1f}")),
            ("session ms", _number(page.get("session_ms"), "{:.1f}")),
            ("max abs error vs native", _number(page.get("max_abs_error_vs_native"), "{:.2e}")),
        ]
        if page.get("fallback_reason"):
            rows.append(("fallback", page["fallback_reason"]))
        parts.append(table(("headless Chromium", ""), rows))
    if web.page_note:
        parts.append(f"<p class='warn'>{e(web.page_note)}</p>")
    return parts


def _notes(result: Noted) -> list[str]:
    """One warning paragraph per note of ``result``."""
    return [f"<p>{_status('warn')} {html.escape(note)}</p>" for note in result.notes]


def _status(status: str) -> str:
    css = "ok" if status == "ok" else "failed" if status == "failed" else "warn"
    return f"<span class='{css}'>{html.escape(status)}</span>"


def _profile_section(result: ProfileResult) -> str:
    e = html.escape
    roofs = result.ceilings
    parts = [
        "<h2 id='profile'>Profile</h2>",
        (
            f"<p>batch {result.batch}, {e(result.provider)}, {result.threads} threads, onnxruntime"
            f" optimization {e(result.optimization)}: <b>{result.total_ms:.3f} ms per run</b> (median of"
            f" {result.runs}); whole model <b>{e(result.bound)}-bound</b>. {result.total_macs / 1e9:.3f}"
            f" GMACs = {result.total_flops / 1e9:.3f} GFLOPs per run (FLOPs count each multiply-accumulate as"
            f" 2 plus elementwise work). Roofs measured {e(roofs.measured_at)}: GEMM {roofs.gemm_gflops:.1f}"
            f" GFLOP/s, memory {roofs.memory_gbps:.1f} GB/s.</p>"
        ),
    ]
    rows = []
    for row in result.by_op_type:
        seconds = row.time_ms / 1000
        rows.append(
            (
                e(row.op_type),
                str(row.nodes),
                f"{row.time_ms:.3f}",
                f"{100 * row.share:.1f}%",
                f"{row.flops / seconds / 1e9:.1f}" if seconds and row.flops else "-",
                f"{row.bytes / seconds / 1e9:.1f}" if seconds and row.bytes else "-",
                e(row.bound),
            )
        )
    parts.append(
        table(
            ("op type (as in your graph)", "nodes", "ms", "share", "GFLOP/s", "GB/s", "bound"),
            rows,
            escape=False,
        )
    )
    if result.recommendations:
        parts.append("<h3>Recommendations</h3><ul>")
        parts.extend(f"<li>{e(r.finding)} &rarr; {e(r.action)}</li>" for r in result.recommendations)
        parts.append("</ul>")
    parts.append(image(figure_bytes(roofline_figure(result)), "roofline: every node a point, sized by time"))
    parts.append(image(figure_bytes(breakdown_figure(result)), "time by op type and bottleneck class"))
    return "\n".join(parts)


def _optimize_section(result: OptimizeResult, bench: BenchResult | None) -> str:
    e = html.escape
    parts = [
        "<h2 id='optimize'>Optimize</h2>",
        (
            f"<p>target {e(result.target)}: <b>nodes {result.nodes_before} &rarr; {result.nodes_after}</b>; "
            f"each pass {'verified against the model before it' if result.verified else 'NOT verified'}.</p>"
        ),
        *_notes(result),
    ]
    if bench is not None:
        rows = []
        for batch in bench.batches:
            before, after = bench.config("ort-all", batch), bench.config("hone+ort-all", batch)
            if before and after:
                rows.append(
                    (
                        str(batch),
                        f"{before.p50_ms:.3f}",
                        f"{after.p50_ms:.3f}",
                        f"{before.p50_ms / after.p50_ms:.2f}x",
                        value_range(after.speedup_per_round, "{:.2f}", "x"),
                        f"{before.peak_rss_mb:.0f}",
                        f"{after.peak_rss_mb:.0f}",
                    )
                )
        if rows:
            parts.append("<p>onnxruntime with all optimizations on both, raced in interleaved blocks:</p>")
            parts.append(
                table(
                    (
                        "batch",
                        "before p50 ms",
                        "after p50 ms",
                        "speedup",
                        "speedup by round",
                        "before RSS MB",
                        "after RSS MB",
                    ),
                    rows,
                )
            )
    rows = [
        (
            e(p.name),
            _status(
                "ok" if p.status in ("applied", "no_change") else "failed" if p.status == "failed" else "warn"
            )
            + f" {e(p.status)}",
            f"{p.nodes_before} &rarr; {p.nodes_after}",
            f"{p.seconds:.2f}",
            "-" if p.max_abs_error is None else f"{p.max_abs_error:.1e}",
            "-" if p.matched is None else str(p.matched),
            e("; ".join([*p.missed, p.message] if p.message else p.missed)),
        )
        for p in result.passes
    ]
    parts.append(
        table(
            ("pass", "status", "nodes", "seconds", "max abs err", "matched", "missed / message"),
            rows,
            escape=False,
        )
    )
    return "\n".join(parts)


def _showcase_section(rows: Sequence[PhotoTop5], artifact: str) -> str:
    e = html.escape

    def top(classes: Sequence[tuple[str, float]]) -> str:
        return "<br>".join(f"{e(name)} {probability:.2f}" for name, probability in classes)

    return "\n".join(
        [
            f"<h2 id='showcase'>Top-5 on real photos: float vs shipped ({e(artifact)})</h2>",
            table(
                ("photo", "float model", f"shipped ({artifact})", "same top-1"),
                [
                    (
                        e(row.photo),
                        top(row.float_top5),
                        top(row.shipped_top5),
                        "yes" if row.float_top5[0][0] == row.shipped_top5[0][0] else "<b>no</b>",
                    )
                    for row in rows
                ],
                escape=False,
            ),
        ]
    )


def _generate_section(run: GenerativeRun) -> str:
    """A generative model's run: its KV cache, the int4 gate and race, the load test."""
    e = html.escape
    layout = run.layout
    parts = [
        "<h2 id='generate'>Generative model</h2>",
        (
            f"<p>{e(layout.architecture)}: {layout.layers} layers, {layout.kv_heads} kv heads x "
            f"{layout.head_dim}, vocabulary {layout.vocab_size}, context {layout.max_context}. "
            f"Shipped: <b>{e(run.shipped)}</b> decoder, <code>{e(run.shipped_path)}</code>.</p>"
        ),
    ]
    if run.cache_check is not None:
        parts.append(f"<p>KV cache: {e(run.cache_check.line())}.</p>")
    result = run.quantize
    if result is not None:
        parts.append(
            f"<p>int4 (block {result.block_size}): kept <b>{e(result.kept)}</b>; gate: {e(result.budget)};"
            f" on {e(result.data)}; float perplexity {result.float_perplexity:.2f}.</p>"
        )
        parts.extend(_notes(result))
        rows = [
            (
                e(c.name) + (" <b>(kept)</b>" if c.chosen else ""),
                str(len(c.kept_float)),
                f"{c.perplexity:.2f} ({c.perplexity_increase:+.2%})",
                f"{c.agreement:.1%}",
                _status("ok") if c.passed else _status("failed"),
                human_bytes(c.size_bytes),
                "-" if c.tokens_per_s is None else f"{c.tokens_per_s:.0f}",
                "-" if c.speedup is None else f"{c.speedup:.2f}x",
            )
            for c in result.candidates
        ]
        header = ("candidate", "MatMuls kept float", "perplexity", "tokens equal", "gate", "size")
        parts.append(table((*header, "tokens/s", "speedup"), rows, escape=False))
    if run.load_test is not None:
        test = run.load_test
        parts.append(f"<p>Load test: {e(test.line())}.</p>")
        parts.append(
            table(
                ("clients", "requests", "tokens", "tokens/s", "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms"),
                [
                    (
                        str(level.concurrency),
                        str(level.requests),
                        str(level.output_tokens),
                        f"{level.tokens_per_s:.0f}",
                        f"{level.ttft_p50_ms:.1f}",
                        f"{level.ttft_p99_ms:.1f}",
                        f"{level.itl_p50_ms:.2f}",
                    )
                    for level in test.levels
                ],
            )
        )
    return "\n".join(parts)


def _quantize_section(result: QuantizeResult) -> str:
    e = html.escape
    kept = (
        f"kept <b>{e(result.format)}</b>, {result.speedup or 0:.2f}x the float model"
        if result.kept_quantized
        else "kept the <b>float</b> model"
    )
    parts = [
        "<h2 id='quantize'>Quantize</h2>",
        (
            f"<p>{e(result.mode)} INT8: {kept}; size {human_bytes(result.size_bytes_before)} &rarr;"
            f" {human_bytes(result.size_bytes_after)}; gate: {e(result.budget)}; calibration:"
            f" {e(result.calibration)}.</p>"
        ),
        *_notes(result),
    ]
    rows = [
        (
            e(c.name) + (" <b>(kept)</b>" if c.chosen else ""),
            str(len(c.kept_float)),
            e(accuracy_text(c.accuracy)),
            _status("ok") if c.accuracy.passed else _status("failed"),
            human_bytes(c.size_bytes),
            "-" if c.p50_ms is None else f"{c.p50_ms:.3f}",
            "-" if c.speedup is None else f"{c.speedup:.2f}x",
        )
        for c in result.candidates
    ]
    parts.append(
        table(
            ("candidate", "layers kept float", "accuracy", "gate", "size", "p50 ms", "speedup"),
            rows,
            escape=False,
        )
    )
    if result.data_split:
        parts.append(f"<p>Samples: {e(result.data_split)}; the gate judged on {e(result.evaluation)}.</p>")
    if result.outputs:
        parts.append("<p>Every output, judged (the worst decides):</p>")
        parts.append(
            table(
                ("output", "role", "metric", "value", "threshold", "gate", "detail"),
                [
                    (
                        e(o.name),
                        e(o.role),
                        e(o.metric),
                        f"{o.value:.4f}",
                        e(o.threshold),
                        _status("ok") if o.passed else _status("failed"),
                        e(output_detail(o)),
                    )
                    for o in result.outputs
                ],
                escape=False,
            )
        )
    if result.layer_errors:
        parts.append("<p>Most sensitive layers (error each one's quantization added):</p>")
        parts.append(
            table(
                ("layer", "op", "local error", "cumulative error"),
                [
                    (layer.node, layer.op_type, f"{layer.local:.4f}", f"{layer.cumulative:.4f}")
                    for layer in result.layer_errors[:10]
                ],
            )
        )
    return "\n".join(parts)
