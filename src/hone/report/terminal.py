"""Rich tables for results: info, bench, verify, and the run summary."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table

from hone.bench.types import BenchResult
from hone.export.types import EdgeResult, ExportResult, WebResult
from hone.info import ModelInfo
from hone.job_types import RunReport
from hone.results import Noted
from hone.verify import OutputJudgement, VerifyResult

if TYPE_CHECKING:
    from hone.export.types import EdgeResult, WebResult
    from hone.machine import MachineCeilings
    from hone.passes.types import OptimizeResult
    from hone.pipeline.types import PipelineResult, SimulationResult
    from hone.profile.types import ProfileResult
    from hone.quantize.types import AccuracyReport, GenerativeQuantizeResult, PruneResult, QuantizeResult


def human_bytes(count: int | None) -> str:
    if count is None:
        return "-"
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def info_tables(info: ModelInfo) -> list[Table]:
    summary = Table(title=f"{info.name}  ({info.source_kind}: {info.source})", show_header=False)
    summary.add_column("field", style="bold")
    summary.add_column("value")
    summary.add_row("file size", human_bytes(info.file_size_bytes))
    summary.add_row("ir version", str(info.ir_version))
    summary.add_row("opsets", ", ".join(f"{d or 'ai.onnx'}={v}" for d, v in info.opset_imports.items()))
    summary.add_row("producer", info.producer or "-")
    summary.add_row("nodes", str(info.node_count))
    summary.add_row("parameters", f"{info.parameter_count:,} ({human_bytes(info.parameter_bytes)})")
    if info.external_data_files:
        summary.add_row("external data", ", ".join(info.external_data_files))
    for key, value in info.provenance.items():
        summary.add_row(escape(key), escape(value))

    io = Table(title="inputs and outputs")
    for column in ("kind", "name", "dtype", "shape"):
        io.add_column(column)
    for kind, tensors in (("input", info.inputs), ("output", info.outputs)):
        for tensor in tensors:
            shape = "[" + ", ".join("?" if d is None else str(d) for d in tensor.shape) + "]"
            io.add_row(kind, escape(tensor.name), tensor.dtype, escape(shape))

    ops = Table(title="nodes by op type")
    ops.add_column("op type")
    ops.add_column("count", justify="right")
    for op, count in info.op_counts.items():
        ops.add_row(escape(op), str(count))
    return [summary, io, ops]


def bench_table(result: BenchResult) -> Table:
    table = Table(
        title=(
            f"bench {result.model}: {result.provider}, {result.threads} threads "
            f"(median stable within ±{100 * result.rel_tol:.0f}% or {result.budget_s:g}s budget)"
        )
    )
    columns = (
        "variant",
        "batch",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "IQR ms",
        "samples/s",
        "speedup",
        "RSS peak MB",
        "+MB",
        "runs",
        "stable",
        "round p50s ms",
        "speedup by round",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "variant" else "right")
    for c in result.configs:
        speedup = "-" if c.speedup_vs_baseline is None else f"{c.speedup_vs_baseline:.2f}x"
        table.add_row(
            c.variant,
            str(c.batch),
            f"{c.p50_ms:.3f}",
            f"{c.p90_ms:.3f}",
            f"{c.p99_ms:.3f}",
            f"{c.iqr_ms:.3f}",
            f"{c.throughput:,.1f}",
            speedup,
            f"{c.peak_rss_mb:.0f}",
            f"{c.peak_mem_mb:.1f}",
            str(c.runs),
            "yes" if c.stable else f"[yellow]no (±{100 * c.median_ci_rel:.1f}%)[/yellow]",
            value_range(c.round_p50_ms, "{:.3f}"),
            value_range(c.speedup_per_round, "{:.2f}", "x"),
        )
    baseline = result.baseline or next(
        (c.baseline_variant for c in result.configs if c.baseline_variant), None
    )
    caption = "RSS peak: the process's resident set at its peak; +MB: its growth during the configuration"
    if baseline:
        caption = (
            f"speedup = p50 of {baseline} / p50, same batch, same {result.method} race "
            "(by round: the same ratio per round, lowest-highest); " + caption
        )
    table.caption = caption
    return table


def value_range(values: list[float], fmt: str, unit: str = "") -> str:
    """``low-high`` of a spread (one value as it is), or ``-`` when there is none."""
    if not values:
        return "-"
    low, high = min(values), max(values)
    if fmt.format(low) == fmt.format(high):
        return fmt.format(low) + unit
    return f"{fmt.format(low)}-{fmt.format(high)}{unit}"


def verify_table(result: VerifyResult) -> Table:
    table = Table(
        title=(
            f"verify {result.model} (batch {result.batch}, finite outputs: "
            f"{'yes' if result.finite else 'NO'})"
        )
    )
    for column in (
        "reference",
        "candidate",
        "output",
        "max abs err",
        "max rel err",
        "cosine",
        "top-1 agree",
        "ok",
    ):
        table.add_column(column)
    for comparison in result.comparisons:
        for output in comparison.outputs:
            table.add_row(
                comparison.reference,
                comparison.candidate,
                output.name,
                f"{output.max_abs_error:.2e}",
                f"{output.max_rel_error:.2e}",
                f"{output.cosine:.6f}",
                "-" if output.top1_agreement is None else f"{100 * output.top1_agreement:.1f}%",
                "[green]yes[/green]" if output.passed else "[red]no[/red]",
            )
    return table


def batch_mean(batch_sizes: dict[int, int]) -> float:
    """Mean samples per batch of a batch-size histogram (samples -> batches); 0 when empty."""
    batches = sum(batch_sizes.values())
    return sum(size * count for size, count in batch_sizes.items()) / batches if batches else 0.0


def run_summary(report: RunReport) -> Table:
    table = Table(title=f"hone run {report.model or report.source}: summary")
    table.add_column("stage")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    table.add_column("result")
    for stage in report.stages:
        detail = stage.message
        if stage.name == "load" and report.info is not None:
            detail = (
                f"{report.info.node_count} nodes, {report.info.parameter_count:,} parameters, "
                f"opset {report.info.opset_imports.get('', '?')}"
            )
        elif stage.name == "verify" and report.verify is not None:
            worst = max((c.max_abs_error for c in report.verify.comparisons), default=0.0)
            refs = ", ".join(f"{c.reference} vs {c.candidate}" for c in report.verify.comparisons)
            detail = f"{refs}: max abs err {worst:.1e}" + ("" if report.verify.passed else " (FAILED)")
        elif stage.name == "profile" and report.profile is not None:
            result = report.profile
            top = result.by_op_type[0] if result.by_op_type else None
            detail = (
                f"batch {result.batch}: {result.total_ms:.2f} ms/run, {result.total_macs / 1e9:.2f} GMACs, "
                f"{result.bound}-bound"
            )
            if top is not None:
                detail += f"; top {top.op_type} {100 * top.share:.0f}% ({top.bound})"
        elif stage.name == "optimize" and report.optimize is not None:
            optimized = report.optimize
            applied = [p.name for p in optimized.passes if p.status == "applied"]
            detail = (
                f"{optimized.target}: nodes {optimized.nodes_before} -> {optimized.nodes_after}; applied"
                f" {', '.join(applied) or 'none'}"
            )
            if optimized.rolled_back:
                detail += f"; rolled back {', '.join(optimized.rolled_back)}"
        elif stage.name == "quantize" and report.quantize is not None:
            quantized = report.quantize
            if quantized.kept_quantized:
                detail = (
                    f"kept {quantized.format}: {accuracy_text(quantized.accuracy)},"
                    f" {quantized.speedup or 0:.2f}x, "
                    f"{human_bytes(quantized.size_bytes_before)} -> {human_bytes(quantized.size_bytes_after)}"
                )
            else:
                detail = "kept float: " + (quantized.notes[-1] if quantized.notes else "no candidate passed")
        elif stage.name == "bench" and report.bench is not None:
            detail = bench_line(report)
        elif stage.name == "serve" and report.serve is not None:
            detail = f"{report.serve.artifact}: " + "; ".join(
                f"c={level.concurrency} p50 {level.p50_ms:.2f} ms, p99 {level.p99_ms:.2f} ms, "
                f"{level.throughput_per_s:,.0f} req/s, mean batch {batch_mean(level.batch_sizes):.1f}"
                for level in report.serve.levels
            )
            if report.serve_tune is not None:
                detail += "; " + report.serve_tune.line().removeprefix("hone tune: ")
        elif stage.name == "ship-serve" and report.serve_repository is not None:
            repository = report.serve_repository
            detail = (
                f"{repository.path} ({human_bytes(repository.size_bytes)}): {repository.model_name} v1 = "
                f"{repository.artifact}, max batch {repository.config['max_batch_size']}, queue delay "
                f"{repository.config['max_queue_delay_ms']:g} ms, {repository.config.get('instances', 1)} "
                f"instance(s) "
                + ("(measured by the serve stage)" if repository.measured else "(not measured)")
                + f"; hone serve {repository.path}"
            )
        elif stage.name == "edge" and report.edge is not None:
            detail = edge_line(report.edge)
        style = {"ok": "green", "failed": "red"}.get(stage.status, "yellow")
        table.add_row(
            stage.name, f"[{style}]{stage.status}[/{style}]", f"{stage.seconds:.1f}", escape(detail)
        )
    if report.shipped is not None:
        table.caption = escape(f"shipped: {report.shipped.label} ({report.shipped.reason})")
    return table


def run_view(report: RunReport) -> list[RenderableType]:
    """What ``hone run`` prints: the stages, the bench table, the showcase photos."""
    views: list[RenderableType | None] = [
        run_summary(report),
        None if report.bench is None else bench_table(report.bench),
        showcase_table(report) if report.showcase else None,
        None
        if report.generate is None or report.generate.quantize is None
        else generative_quantize_table(report.generate.quantize),
    ]
    return [view for view in views if view is not None]


def bench_line(report: RunReport) -> str:
    """The fastest configuration at each batch, and each candidate's speedup over the baseline."""
    bench = report.bench
    assert bench is not None
    parts = []
    for batch in bench.batches:
        best = bench.best(batch)
        if best is not None:
            parts.append(f"batch {batch}: {best.variant} {best.p50_ms:.2f} ms")
    line = "fastest " + "; ".join(parts)
    if report.shipped is not None and report.shipped.speedups:
        line += f"; vs {bench.baseline}: " + ", ".join(
            f"{label} {'/'.join(f'{s:.2f}x' for s in values)}"
            for label, values in report.shipped.speedups.items()
        )
    return line


def edge_line(edge: EdgeResult) -> str:
    manifest, profile = edge.manifest, edge.profile
    line = (
        f"{edge.path}: {manifest.format}, {human_bytes(manifest.size_bytes)}"
        f" ({human_bytes(manifest.gzip_bytes)} gzip'd)"
    )
    artifact, float_model = profile.artifact, profile.float_model
    if artifact.fits and artifact.p50_ms is not None:
        line += f"; 1 thread p50 {artifact.p50_ms:.2f} ms"
        if float_model.fits and float_model.p50_ms is not None:
            line += f" vs fp32 {float_model.p50_ms:.2f} ms"
        if artifact.peak_rss_mb is not None:
            line += f", peak RSS {artifact.peak_rss_mb:.0f} MB"
    return line


def profile_tables(result: ProfileResult, top_nodes: int = 10) -> list[Table]:
    roofs = result.ceilings
    by_type = Table(
        title=(
            f"profile {result.model}: batch {result.batch}, {result.provider}, {result.threads} threads, ORT"
            f" optimization {result.optimization}; {result.total_ms:.3f} ms/run (median of {result.runs});"
            f" whole model {result.bound}-bound"
        ),
        caption=(
            f"roofs measured {roofs.measured_at}: GEMM {roofs.gemm_gflops:.1f} GFLOP/s, "
            f"memory {roofs.memory_gbps:.1f} GB/s; {result.total_macs / 1e9:.3f} GMACs = "
            f"{result.total_flops / 1e9:.3f} GFLOPs per run"
        ),
    )
    for column in ("op type", "nodes", "ms", "share", "GFLOP/s", "GB/s", "bound"):
        by_type.add_column(column, justify="left" if column in ("op type", "bound") else "right")
    for row in result.by_op_type:
        seconds = row.time_ms / 1000 if row.time_ms else 0.0
        by_type.add_row(
            escape(row.op_type),
            str(row.nodes),
            f"{row.time_ms:.3f}",
            f"{100 * row.share:.1f}%",
            f"{row.flops / seconds / 1e9:.1f}" if seconds and row.flops else "-",
            f"{row.bytes / seconds / 1e9:.1f}" if seconds and row.bytes else "-",
            row.bound,
        )
    nodes = Table(title=f"slowest {top_nodes} nodes")
    for column in ("node", "executed as", "ms", "share", "GFLOP/s", "GB/s", "% roof", "bound"):
        nodes.add_column(column, justify="left" if column in ("node", "executed as", "bound") else "right")
    for node in sorted(result.nodes, key=lambda n: n.time_ms, reverse=True)[:top_nodes]:
        nodes.add_row(
            escape(node.name[-48:]),
            escape(f"{node.op_type} ({node.covered_ops})"),
            f"{node.time_ms:.3f}",
            f"{100 * node.share:.1f}%",
            f"{node.achieved_gflops:.1f}",
            f"{node.achieved_gbps:.1f}",
            f"{node.roof_pct:.0f}%",
            node.bound,
        )
    advice = Table(title="recommendations", show_lines=False)
    advice.add_column("finding")
    advice.add_column("do")
    for rec in result.recommendations:
        advice.add_row(escape(rec.finding), escape(rec.action))
    return [by_type, nodes, advice]


def machine_table(ceilings: MachineCeilings) -> Table:
    table = Table(title="machine ceilings (measured)", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("cpu", escape(ceilings.cpu))
    table.add_row("threads", str(ceilings.threads))
    table.add_row("peak GEMM", f"{ceilings.gemm_gflops:.1f} GFLOP/s (N={ceilings.gemm_size})")
    table.add_row("memory bandwidth", f"{ceilings.memory_gbps:.1f} GB/s (read + write)")
    table.add_row("ridge point", f"{ceilings.gemm_gflops / ceilings.memory_gbps:.1f} FLOP/byte")
    table.add_row("measured at", ceilings.measured_at)
    table.add_row("method", escape(ceilings.method))
    return table


def optimize_table(result: OptimizeResult) -> Table:
    table = Table(
        title=(
            f"optimize {result.model} for {result.target}: nodes {result.nodes_before} ->"
            f" {result.nodes_after}"
        )
        + ("" if result.verified else " (NOT verified)"),
        caption=notes_caption(result),
    )
    for column in ("pass", "status", "nodes", "seconds", "max abs err", "matched", "missed / message"):
        table.add_column(
            column, justify="right" if column in ("seconds", "max abs err", "matched") else "left"
        )
    styles = {"applied": "green", "no_change": "dim", "rolled_back": "yellow", "failed": "red"}
    for p in result.passes:
        style = styles.get(p.status, "white")
        notes = "; ".join([*p.missed, p.message] if p.message else p.missed)
        table.add_row(
            p.name,
            f"[{style}]{p.status}[/{style}]",
            f"{p.nodes_before} -> {p.nodes_after}",
            f"{p.seconds:.2f}",
            "-" if p.max_abs_error is None else f"{p.max_abs_error:.1e}",
            "-" if p.matched is None else str(p.matched),
            escape(notes),
        )
    return table


def accuracy_text(report: AccuracyReport | None) -> str:
    if report is None:
        return "-"
    if report.metric == "top1":
        return f"top-1 {report.candidate_value:.2f}% (float {report.float_value:.2f}%)"
    if report.metric == "agreement":
        text = f"agreement {report.candidate_value:.2%}"
    elif report.metric == "channel-error":
        text = f"worst channel error {report.candidate_value:.3f}"
    elif report.metric == "exact":
        text = f"{report.candidate_value:.2%} equal"
    else:
        low = "" if report.cosine_min is None else f", min {report.cosine_min:.4f}"
        text = f"cosine mean {report.candidate_value:.4f}{low}"
    if len(report.outputs) > 1:
        text += f" ({report.deciding_output!r} of {len(report.outputs)} outputs decides)"
    return text


def output_detail(judgement: OutputJudgement) -> str:
    """The metrics of one judged output, in words."""
    parts = []
    if judgement.top1_agreement is not None:
        parts.append(f"top-1 {judgement.top1_agreement:.2%}")
    if judgement.top5_agreement is not None:
        parts.append(f"top-5 set {judgement.top5_agreement:.2%}")
    if judgement.worst_channel_error is not None:
        axis = "whole tensor" if judgement.channel_axis is None else f"axis {judgement.channel_axis}"
        parts.append(
            f"worst channel {judgement.worst_channel} of {judgement.channels} ({axis}): "
            f"{judgement.worst_channel_error:.4f} of its scale"
        )
    if judgement.cosine_mean is not None:
        parts.append(f"cosine mean {judgement.cosine_mean:.4f}, min {judgement.cosine_min:.4f}")
    if judgement.exact_match is not None:
        parts.append(f"{judgement.exact_match:.2%} equal")
    return "; ".join(parts) + f" ({judgement.samples} samples)"


def outputs_table(result: QuantizeResult) -> Table | None:
    """Every output of the kept (else the best) candidate, judged; None when nothing was judged."""
    if not result.outputs:
        return None
    table = Table(title=f"gate per output ({escape(result.data_split or result.evaluation)})")
    for column in ("output", "role", "metric", "value", "gate", "detail"):
        table.add_column(column)
    for judgement in result.outputs:
        gate = "[green]pass[/green]" if judgement.passed else "[red]miss[/red]"
        table.add_row(
            escape(judgement.name),
            judgement.role,
            judgement.metric,
            f"{judgement.value:.4f}",
            gate,
            escape(output_detail(judgement)),
        )
    return table


def showcase_table(report: RunReport) -> Table | None:
    """The showcase photos' top-5, float vs shipped; None without a showcase."""
    if not report.showcase:
        return None
    table = Table(title=f"top-5 on real photos: float vs shipped ({escape(report.showcase_artifact)})")
    for column in ("photo", "float model", "shipped"):
        table.add_column(column)
    for row in report.showcase:
        table.add_row(
            row.photo,
            ", ".join(f"{n} {p:.2f}" for n, p in row.float_top5),
            ", ".join(f"{n} {p:.2f}" for n, p in row.shipped_top5),
        )
    return table


def quantize_table(result: QuantizeResult) -> Table:
    """Every candidate hone built, judged and timed; the kept one marked."""
    kept = f"kept {result.format}" + (f", {result.speedup:.2f}x" if result.speedup else "")
    table = Table(
        title=(
            f"quantize {result.model} ({result.mode}): {kept}; size {human_bytes(result.size_bytes_before)}"
            f" -> {human_bytes(result.size_bytes_after)}; gate: {escape(result.budget)}"
        ),
        caption=notes_caption(result),
    )
    for column in ("candidate", "kept float", "accuracy", "gate", "size", "p50 ms", "speedup"):
        table.add_column(column, justify="right" if column in ("size", "p50 ms", "speedup") else "left")
    if result.float_p50_ms is not None:
        table.add_row(
            "float",
            "-",
            "-",
            "-",
            human_bytes(result.size_bytes_before),
            f"{result.float_p50_ms:.2f}",
            "1.00x",
        )
    for candidate in result.candidates:
        gate = "[green]pass[/green]" if candidate.accuracy.passed else "[red]miss[/red]"
        name = f"[bold]{candidate.name} (kept)[/bold]" if candidate.chosen else candidate.name
        table.add_row(
            name,
            str(len(candidate.kept_float)),
            escape(accuracy_text(candidate.accuracy)),
            gate,
            human_bytes(candidate.size_bytes),
            "-" if candidate.p50_ms is None else f"{candidate.p50_ms:.2f}",
            "-" if candidate.speedup is None else f"{candidate.speedup:.2f}x",
        )
    return table


def generative_quantize_table(result: GenerativeQuantizeResult) -> Table:
    """A decoder's int4/int8 candidates: the generative gate's numbers and tokens/s at one sequence."""
    kept = f"kept {result.kept}" + (f", {result.speedup:.2f}x tokens/s" if result.speedup else "")
    block = f", block {result.block_size}" if result.block_size else ""
    table = Table(
        title=(
            f"quantize {result.model} ({result.mode}{block}): {kept}; size "
            f"{human_bytes(result.size_bytes_before)} -> {human_bytes(result.size_bytes_after)}; "
            f"gate: {escape(result.budget)}; on {escape(result.data)}"
        ),
        caption=notes_caption(result),
    )
    for column in (
        "candidate",
        "kept float",
        "perplexity",
        "tokens equal",
        "gate",
        "size",
        "tokens/s",
        "speedup",
    ):
        table.add_column(column, justify="left" if column in ("candidate", "gate") else "right")
    speed = "-" if result.float_tokens_per_s is None else f"{result.float_tokens_per_s:.0f}"
    table.add_row(
        "float",
        "-",
        f"{result.float_perplexity:.2f}",
        "100%",
        "-",
        human_bytes(result.size_bytes_before),
        speed,
        "1.00x",
    )
    for candidate in result.candidates:
        gate = "[green]pass[/green]" if candidate.passed else f"[red]miss[/red] {escape(candidate.reason)}"
        name = f"[bold]{candidate.name} (kept)[/bold]" if candidate.chosen else candidate.name
        table.add_row(
            name,
            str(len(candidate.kept_float)),
            f"{candidate.perplexity:.2f} ({candidate.perplexity_increase:+.2%})",
            f"{candidate.agreement:.1%}",
            gate,
            human_bytes(candidate.size_bytes),
            "-" if candidate.tokens_per_s is None else f"{candidate.tokens_per_s:.0f}",
            "-" if candidate.speedup is None else f"{candidate.speedup:.2f}x",
        )
    return table


def prune_table(result: PruneResult, top_layers: int = 12) -> Table:
    """Per-layer sparsity (the largest layers first) and the gate's verdict in the title."""
    verdict = {True: "[green]within budget[/green]", False: "[red]outside budget[/red]", None: "not judged"}[
        result.passed
    ]
    speed = f"; {result.speedup:.2f}x" if result.speedup else ""
    table = Table(
        title=(
            f"prune {result.model} ({result.pattern}): sparsity {result.achieved_sparsity:.1%},"
            f" {escape(accuracy_text(result.accuracy_after))} {verdict}; zipped size"
            f" {human_bytes(result.compressed_bytes_before)} ->"
            f" {human_bytes(result.compressed_bytes_after)}{speed}"
        ),
        caption=notes_caption(result),
    )
    for column in ("weight", "op", "shape", "params", "sparsity"):
        table.add_column(column, justify="right" if column in ("params", "sparsity") else "left")
    layers = sorted(result.layers, key=lambda layer: layer.params, reverse=True)
    for layer in layers[:top_layers]:
        table.add_row(
            escape(layer.name),
            layer.op_type,
            "x".join(map(str, layer.shape)),
            f"{layer.params:,}",
            f"{layer.sparsity_after:.1%}",
        )
    if len(layers) > top_layers:
        table.add_row(f"... {len(layers) - top_layers} more (see --json)", "", "", "", "")
    return table


def edge_table(result: EdgeResult) -> Table:
    """fp32 vs the artifact: size, gzip size, latency, peak memory, session creation, accuracy."""
    manifest, profile = result.manifest, result.profile
    table = Table(
        title=(
            f"edge {result.model}: 1 thread, batch 1, ORT all optimizations, memory cap "
            f"+{profile.memory_cap_mb} MB over an idle process ({profile.idle_rss_mb:.0f} MB RSS)"
        )
    )
    for column in (
        "model",
        "size",
        "gzip",
        "p50 ms",
        "p90 ms",
        "peak RSS MB (model)",
        "session ms",
        "accuracy",
    ):
        table.add_column(column, justify="left" if column in ("model", "accuracy") else "right")
    accuracy = manifest.accuracy
    rows = (
        (
            "fp32",
            manifest.float_size_bytes,
            manifest.float_gzip_bytes,
            profile.float_model,
            (
                "reference"
                if accuracy is None or accuracy.metric != "top1"
                else f"top-1 {accuracy.float_value:.2f}%"
            ),
        ),
        (
            (
                manifest.format
                if manifest.sparsity is None
                else f"{manifest.format}, {manifest.sparsity:.0%} sparse"
            ),
            manifest.size_bytes,
            manifest.gzip_bytes,
            profile.artifact,
            "the float model" if accuracy is None else _judged_text(accuracy),
        ),
    )
    for label, size, gzipped, run, judged in rows:
        timing = (
            [
                f"{run.p50_ms:.3f}",
                f"{run.p90_ms:.3f}",
                f"{run.peak_rss_mb:.0f} (+{run.model_rss_mb:.0f})",
                f"{run.session_create_ms:.0f}",
            ]
            if run.fits
            else ["over the cap", "-", "-", "-"]
        )
        table.add_row(label, human_bytes(size), human_bytes(gzipped), *timing, judged)
    return table


def _judged_text(accuracy: AccuracyReport) -> str:
    value = (
        f"top-1 {accuracy.candidate_value:.2f}%"
        if accuracy.metric == "top1"
        else f"{accuracy.metric} {accuracy.candidate_value:.4f}"
    )
    return f"{value} ({'within' if accuracy.passed else 'OUTSIDE'} {accuracy.budget})"


def web_table(result: WebResult) -> Table:
    """The web bundle: its files and sizes, and where each op will run on WebGPU."""
    manifest = result.manifest
    placement = manifest.placement
    table = Table(
        title=f"web {result.model}: onnxruntime-web {manifest.ort_web_version}, WebGPU with WASM fallback"
    )
    table.add_column("what")
    table.add_column("value")
    table.add_row("bundle", f"{human_bytes(manifest.size_bytes)} ({human_bytes(manifest.gzip_bytes)} gzip'd)")
    table.add_row("models", ", ".join(f"{provider}: {name}" for provider, name in manifest.models.items()))
    table.add_row("WebGPU placement", f"{placement.webgpu_nodes} of {placement.nodes} nodes on WebGPU")
    for group in placement.cpu:
        table.add_row("  on the CPU", f"{group.op_type} x{group.nodes}: {group.reason}")
    for group in placement.restricted:
        table.add_row("  restricted", f"{group.op_type} x{group.nodes}: {group.reason}")
    table.add_row("preprocessing", manifest.preprocessing.description)
    return table


def notes_caption(result: Noted) -> str | None:
    """A table's caption: the result's notes, escaped, on one line (None without notes)."""
    return escape("; ".join(result.notes)) or None


def note_lines(result: Noted) -> list[str]:
    """One ``note:`` line per note of ``result``, escaped for the terminal."""
    return [f"note: {escape(note)}" for note in result.notes]


def export_view(result: ExportResult) -> list[RenderableType]:
    """What ``hone export`` prints for its result: the bundle's table and notes, and where it went."""
    if isinstance(result, WebResult):
        return [
            web_table(result),
            *note_lines(result.manifest),
            f"wrote {result.path} ({len(result.files)} files); open it with: hone serve-web {result.path}",
        ]
    if isinstance(result, EdgeResult):
        return [
            edge_table(result),
            *note_lines(result.manifest),
            f"wrote {result.path}: " + ", ".join(Path(f).name for f in result.files),
        ]
    return [f"wrote {result.path} ({result.size_bytes:,} bytes, target {result.target})"]


def pipeline_table(result: PipelineResult) -> Table:
    """Per stage: blocks, predicted cost, measured busy / recv wait / idle, bubble, activations."""
    table = Table(
        title=(
            f"pipeline {result.model}: {len(result.stages)} stages, {result.schedule}, {result.mode}, "
            f"batch {result.batch} as {result.microbatches} x {result.microbatch_size}, "
            f"{result.threads_per_stage} thread(s) per stage, {result.backend}"
        )
    )
    for column in (
        "stage",
        "blocks",
        "params",
        "cost ms/mb",
        "busy ms",
        "recv wait ms",
        "idle ms",
        "bubble",
        "peak in flight",
        "peak activations",
        "sends",
    ):
        table.add_column(column, justify="left" if column == "blocks" else "right")
    for stage in result.stages:
        blocks = (
            stage.blocks[0]
            if len(stage.blocks) == 1
            else f"{stage.blocks[0]} .. {stage.blocks[-1]} ({len(stage.blocks)})"
        )
        table.add_row(
            str(stage.index),
            escape(blocks),
            f"{stage.params:,}",
            f"{stage.cost_ms:.1f}",
            f"{stage.busy_ms:.1f}",
            f"{stage.recv_wait_ms:.1f}",
            f"{stage.idle_ms:.1f}",
            f"{stage.bubble:.1%}",
            str(stage.peak_in_flight),
            human_bytes(stage.peak_activation_bytes),
            human_bytes(stage.activation_bytes) if stage.activation_bytes else "-",
        )
    return table


def pipeline_summary(result: PipelineResult) -> list[str]:
    """The lines under the table: step, bubbles, simulator, check, single process."""
    lines = [
        (
            f"step {result.step_ms:.1f} ms (median of {max(1, len(result.steps_ms) - 1)} measured); bubble "
            f"measured {result.bubble_measured:.1%}, formula (S-1)/(M+S-1) {result.bubble_formula:.1%}; "
            f"simulated {result.simulated_step_ms:.1f} ms on the stages' measured action times, bubble "
            f"{result.simulated_bubble:.1%} (planned from the block costs: {result.planned_step_ms:.1f} ms)"
        ),
        (
            f"single process, whole batch, {result.threads_per_stage * len(result.stages)} thread(s):"
            f" {result.single_process_ms:.1f} ms; the pipeline's speed-up over it:"
            f" {result.single_process_ms / result.step_ms:.2f}x"
        ),
    ]
    check = f"max abs error vs one process: {result.max_abs_error_vs_single_process:.3g}"
    if result.max_grad_rel_error_vs_single_process is not None:
        check += f"; max gradient error (relative): {result.max_grad_rel_error_vs_single_process:.3g}"
    lines.append(check)
    return lines


def simulation_table(result: SimulationResult) -> Table:
    """A simulated step: per rank busy, idle, bubble and peak in-flight micro-batches."""
    cores = f", ranks sharing {result.cores} cores" if result.cores else ""
    table = Table(
        title=f"simulated {result.schedule} ({result.mode}): S={result.stages}, M={result.microbatches}"
        + (f", V={result.chunks}" if result.chunks > 1 else "")
        + f", link {result.link.bandwidth_gbps:g} GB/s + {result.link.latency_ms:g} ms{cores}"
    )
    for column in ("rank", "busy ms", "idle ms", "bubble", "peak in flight"):
        table.add_column(column, justify="right")
    shown = (
        result.per_stage if len(result.per_stage) <= 16 else [*result.per_stage[:8], *result.per_stage[-4:]]
    )
    for stage in shown:
        table.add_row(
            str(stage.rank),
            f"{stage.busy_ms:.1f}",
            f"{stage.idle_ms:.1f}",
            f"{stage.bubble:.1%}",
            str(stage.peak_in_flight),
        )
    return table
