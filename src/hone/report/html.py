"""The HTML report: one self-contained file (styles inline, plots as data: URIs) that opens offline.

It renders a RunReport; every number in it comes from the report's dataclasses.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from pathlib import Path

from hone.report.plots import (
    bench_latency_png,
    breakdown_figure,
    figure_bytes,
    op_counts_png,
    roofline_figure,
)
from hone.report.terminal import human_bytes

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


def write_html(report: "object", path: Path) -> Path:
    path.write_text(render_html(report), encoding="utf-8")
    return path


def render_html(report: "object") -> str:
    from hone.job import RunReport

    assert isinstance(report, RunReport)
    e = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>hone report: {e(report.model)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>hone report: {e(report.model)}</h1>",
        f"<p class='sub'>source <code>{e(report.source)}</code> · started {e(report.started_at)} · "
        f"hone {e(report.hone_version)} · overall "
        f"<span class='{'ok' if report.passed else 'failed'}'>{'passed' if report.passed else 'FAILED'}</span></p>",
        "<h2 id='stages'>Stages</h2>",
        _table(
            ("stage", "status", "seconds", "message"),
            [
                (s.name, _status(s.status), f"{s.seconds:.2f}", e(s.message))
                for s in report.stages
            ],
            escape=False,
        ),
    ]
    if report.defaults_taken:
        parts.append("<h2 id='defaults'>Defaults taken</h2><ul>")
        parts.extend(f"<li>{e(item)}</li>" for item in report.defaults_taken)
        parts.append("</ul>")
    if report.info is not None:
        info = report.info
        parts.append("<h2 id='model'>Model</h2>")
        rows = [
            ("file size", human_bytes(info.file_size_bytes)),
            ("opsets", ", ".join(f"{d or 'ai.onnx'}={v}" for d, v in info.opset_imports.items())),
            ("nodes", str(info.node_count)),
            ("parameters", f"{info.parameter_count:,} ({human_bytes(info.parameter_bytes)})"),
            ("producer", info.producer or "-"),
            *((k, v) for k, v in info.provenance.items()),
        ]
        parts.append(_table(("field", "value"), rows))
        io_rows = [
            (kind, t.name, t.dtype, "[" + ", ".join("?" if d is None else str(d) for d in t.shape) + "]")
            for kind, tensors in (("input", info.inputs), ("output", info.outputs))
            for t in tensors
        ]
        parts.append(_table(("kind", "name", "dtype", "shape"), io_rows))
        parts.append(_image(op_counts_png(info.op_counts, "nodes by op type"), "nodes by op type"))
    if report.verify is not None:
        verify = report.verify
        parts.append("<h2 id='verify'>Verify</h2>")
        parts.append(
            f"<p>batch {verify.batch}; outputs finite: {'yes' if verify.finite else 'NO'}; "
            f"tolerance |Δ| ≤ atol + rtol·|ref|</p>"
        )
        rows = [
            (
                e(c.reference), e(c.candidate), e(o.name), f"{o.max_abs_error:.2e}", f"{o.max_rel_error:.2e}",
                f"{o.cosine:.6f}", "-" if o.top1_agreement is None else f"{100 * o.top1_agreement:.1f}%",
                f"{c.atol:g} / {c.rtol:g}", _status("ok" if o.passed else "failed"),
            )
            for c in verify.comparisons
            for o in c.outputs
        ]
        parts.append(
            _table(("reference", "candidate", "output", "max abs err", "max rel err", "cosine",
                    "top-1 agree", "atol / rtol", "ok"), rows, escape=False)
        )
    if report.profile is not None:
        parts.append(_profile_section(report.profile))
    if report.optimize is not None:
        parts.append(_optimize_section(report.optimize, report.bench))
    if report.quantize is not None:
        parts.append(_quantize_section(report.quantize))
    if report.bench is not None:
        result = report.bench
        parts.append("<h2 id='bench'>Benchmark</h2>")
        parts.append(
            f"<p>{e(result.provider)}, {result.threads} threads; each configuration ran until the "
            f"median's 95% CI was within ±{100 * result.rel_tol:.0f}% or {result.budget_s:g}s passed. "
            f"Machine: {e(', '.join(f'{k} {v}' for k, v in result.machine.items()))}.</p>"
        )
        rows = [
            (
                e(c.variant), str(c.batch), f"{c.p50_ms:.3f}", f"{c.p90_ms:.3f}", f"{c.p99_ms:.3f}",
                f"{c.iqr_ms:.3f}", f"{c.throughput:,.1f}",
                "-" if c.speedup_vs_baseline is None else f"{c.speedup_vs_baseline:.2f}x",
                f"{c.peak_rss_mb:.0f}", f"{c.peak_mem_mb:.1f}", str(c.runs),
                "<span class='ok'>yes</span>" if c.stable
                else f"<span class='warn'>no (±{100 * c.median_ci_rel:.1f}%)</span>",
            )
            for c in result.configs
        ]
        parts.append(
            _table(("variant", "batch", "p50 ms", "p90 ms", "p99 ms", "IQR ms", "samples/s",
                    "speedup", "RSS peak MB", "+MB", "runs", "stable"), rows, escape=False)
        )
        parts.append(_image(bench_latency_png(result), "latency and throughput by variant and batch"))
    if report.serve is not None:
        serve = report.serve
        parts.append("<h2 id='serve'>Serving</h2>")
        parts.append(
            f"<p>{e(serve.artifact)} behind the dynamic batcher (max batch {serve.max_batch_size}, "
            f"queue delay {serve.max_queue_delay_ms:g} ms), closed-loop single-sample requests, in-process.</p>"
        )
        rows = [
            (
                str(level.concurrency), str(level.requests), str(level.failures), f"{level.p50_ms:.3f}",
                f"{level.p99_ms:.3f}", f"{level.throughput_per_s:,.1f}",
                ", ".join(f"{size}: {count}" for size, count in sorted(level.batch_sizes.items())),
            )
            for level in serve.levels
        ]
        parts.append(_table(("concurrency", "requests", "failures", "p50 ms", "p99 ms", "requests/s",
                             "batch size: batches"), rows))
    if report.web is not None:
        parts.extend(_web_section(report.web))
    parts.append("</body></html>")
    return "\n".join(parts)


def _web_section(web: "object") -> list[str]:
    """The browser bundle: what runs where on WebGPU (static check) and what one page load measured."""
    e = html.escape
    placement = web.placement
    parts = ["<h2 id='web'>Web bundle</h2>",
             f"<p>{e(web.path)}: {web.size_bytes / 1e6:.1f} MB ({web.gzip_bytes / 1e6:.1f} MB gzip'd), onnxruntime-web "
             f"{e(placement.ort_web_version)}; open it with <code>hone serve-web {e(web.path)}</code>.</p>",
             f"<p>{e(placement.summary())}</p>"]
    page = web.page
    if page and not page.get("error"):
        adapter = page.get("adapter") or {}
        software = " (software adapter: not GPU speed)" if adapter.get("isFallbackAdapter") else ""
        where = (f"WebGPU on {adapter.get('vendor', '')} {adapter.get('architecture', '')}{software}"
                 if page.get("provider") == "webgpu" else "WASM (CPU)")
        rows = [("ran on", where), ("median ms", f"{page['median_ms']:.2f}"),
                ("first run ms", f"{page['first_run_ms']:.1f}"), ("session ms", f"{page['session_ms']:.1f}"),
                ("max abs error vs native", f"{page['max_abs_error_vs_native']:.2e}")]
        if page.get("fallback_reason"):
            rows.append(("fallback", page["fallback_reason"]))
        parts.append(_table(("headless Chromium", ""), rows))
    if web.page_note:
        parts.append(f"<p class='warn'>{e(web.page_note)}</p>")
    return parts


def _status(status: str) -> str:
    css = "ok" if status == "ok" else "failed" if status == "failed" else "warn"
    return f"<span class='{css}'>{html.escape(status)}</span>"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], *, escape: bool = True) -> str:
    cell = html.escape if escape else (lambda text: text)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _image(png: bytes, alt: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f"<p><img alt='{html.escape(alt)}' src='data:image/png;base64,{encoded}'></p>"


def _profile_section(result: "object") -> str:
    from hone.profile import ProfileResult

    assert isinstance(result, ProfileResult)
    e = html.escape
    roofs = result.ceilings
    parts = [
        "<h2 id='profile'>Profile</h2>",
        f"<p>batch {result.batch}, {e(result.provider)}, {result.threads} threads, onnxruntime "
        f"optimization {e(result.optimization)}: <b>{result.total_ms:.3f} ms per run</b> (median of "
        f"{result.runs}); whole model <b>{e(result.bound)}-bound</b>. {result.total_macs / 1e9:.3f} GMACs "
        f"= {result.total_flops / 1e9:.3f} GFLOPs per run (FLOPs count each multiply-accumulate as 2 "
        f"plus elementwise work). Roofs measured {e(roofs.measured_at)}: GEMM "
        f"{roofs.gemm_gflops:.1f} GFLOP/s, memory {roofs.memory_gbps:.1f} GB/s.</p>",
    ]
    rows = []
    for row in result.by_op_type:
        seconds = row.time_ms / 1000
        rows.append((
            e(row.op_type), str(row.nodes), f"{row.time_ms:.3f}", f"{100 * row.share:.1f}%",
            f"{row.flops / seconds / 1e9:.1f}" if seconds and row.flops else "-",
            f"{row.bytes / seconds / 1e9:.1f}" if seconds and row.bytes else "-", e(row.bound),
        ))
    parts.append(_table(("op type (as in your graph)", "nodes", "ms", "share", "GFLOP/s", "GB/s", "bound"),
                        rows, escape=False))
    if result.recommendations:
        parts.append("<h3>Recommendations</h3><ul>")
        parts.extend(f"<li>{e(r.finding)} &rarr; {e(r.action)}</li>" for r in result.recommendations)
        parts.append("</ul>")
    parts.append(_image(figure_bytes(roofline_figure(result)), "roofline: every node a point, sized by time"))
    parts.append(_image(figure_bytes(breakdown_figure(result)), "time by op type and bottleneck class"))
    return "\n".join(parts)


def _optimize_section(result: "object", bench: "object") -> str:
    from hone.bench import BenchResult
    from hone.passes import OptimizeResult

    assert isinstance(result, OptimizeResult)
    e = html.escape
    parts = [
        "<h2 id='optimize'>Optimize</h2>",
        f"<p>target {e(result.target)}: <b>nodes {result.nodes_before} &rarr; {result.nodes_after}</b>; "
        f"each pass {'verified against the model before it' if result.verified else 'NOT verified'}.</p>",
        *(f"<p>{_status('warn')} {e(note)}</p>" for note in result.notes),
    ]
    if isinstance(bench, BenchResult):
        rows = []
        for batch in bench.batches:
            for level in ("ort-disabled", "ort-all"):
                before = next((c for c in bench.configs if c.variant == level and c.batch == batch), None)
                after = next((c for c in bench.configs if c.variant == f"hone+{level}" and c.batch == batch), None)
                if before and after:
                    rows.append((str(batch), level, f"{before.p50_ms:.3f}", f"{after.p50_ms:.3f}",
                                 f"{before.p50_ms / after.p50_ms:.2f}x", f"{before.peak_rss_mb:.0f}",
                                 f"{after.peak_rss_mb:.0f}"))
        parts.append(_table(("batch", "onnxruntime", "before p50 ms", "after p50 ms", "speedup",
                             "before RSS MB", "after RSS MB"), rows))
    rows = [
        (e(p.name), _status("ok" if p.status in ("applied", "no_change") else "failed" if p.status == "failed" else "warn")
         + f" {e(p.status)}", f"{p.nodes_before} &rarr; {p.nodes_after}", f"{p.seconds:.2f}",
         "-" if p.max_abs_error is None else f"{p.max_abs_error:.1e}", "-" if p.matched is None else str(p.matched),
         e("; ".join([*p.missed, p.message] if p.message else p.missed)))
        for p in result.passes
    ]
    parts.append(_table(("pass", "status", "nodes", "seconds", "max abs err", "matched", "missed / message"),
                        rows, escape=False))
    return "\n".join(parts)


def _quantize_section(result: "object") -> str:
    from hone.quantize import QuantizeResult
    from hone.report.terminal import accuracy_text, human_bytes

    assert isinstance(result, QuantizeResult)
    e = html.escape
    kept = (f"kept <b>{e(result.format)}</b>, {result.speedup or 0:.2f}x the float model" if result.kept_quantized
            else "kept the <b>float</b> model")
    parts = [
        "<h2 id='quantize'>Quantize</h2>",
        f"<p>{e(result.mode)} INT8: {kept}; size {human_bytes(result.size_bytes_before)} &rarr; "
        f"{human_bytes(result.size_bytes_after)}; gate: {e(result.budget)}; calibration: {e(result.calibration)}.</p>",
        *(f"<p>{_status('warn')} {e(note)}</p>" for note in result.notes),
    ]
    rows = [
        (e(c.name) + (" <b>(kept)</b>" if c.chosen else ""), str(len(c.kept_float)), e(accuracy_text(c.accuracy)),
         _status("ok") if c.accuracy.passed else _status("failed"), human_bytes(c.size_bytes),
         "-" if c.p50_ms is None else f"{c.p50_ms:.3f}", "-" if c.speedup is None else f"{c.speedup:.2f}x")
        for c in result.candidates
    ]
    parts.append(_table(("candidate", "layers kept float", "accuracy", "gate", "size", "p50 ms", "speedup"), rows,
                        escape=False))
    if result.layer_errors:
        parts.append("<p>Most sensitive layers (error each one's quantization added):</p>")
        parts.append(_table(("layer", "op", "local error", "cumulative error"),
                            [(layer.node, layer.op_type, f"{layer.local:.4f}", f"{layer.cumulative:.4f}")
                             for layer in result.layer_errors[:10]]))
    return "\n".join(parts)
