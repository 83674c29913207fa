"""Plots of results as PNG bytes (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

from hone.bench.types import BenchResult

if TYPE_CHECKING:
    from hone.profile.types import ProfileResult


def bench_latency_png(result: BenchResult) -> bytes:
    """Grouped bars: p50 latency per variant at each batch, whiskers up to p99."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = result.batches
    variants = result.variants
    width = 0.8 / max(len(variants), 1)
    figure, (latency_axis, throughput_axis) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    for index, variant in enumerate(variants):
        configs = {c.batch: c for c in result.configs if c.variant == variant}
        positions = [b_index + index * width for b_index in range(len(batches))]
        p50 = [configs[b].p50_ms if b in configs else 0.0 for b in batches]
        upper = [(configs[b].p99_ms - configs[b].p50_ms) if b in configs else 0.0 for b in batches]
        latency_axis.bar(positions, p50, width, yerr=[[0.0] * len(p50), upper], capsize=3, label=variant)
        throughput = [configs[b].throughput if b in configs else 0.0 for b in batches]
        throughput_axis.bar(positions, throughput, width, label=variant)
    ticks = [b_index + width * (len(variants) - 1) / 2 for b_index in range(len(batches))]
    for axis, label in (
        (latency_axis, "latency ms (p50, whisker to p99)"),
        (throughput_axis, "throughput samples/s (at p50)"),
    ):
        axis.set_xticks(ticks, [f"batch {b}" for b in batches])
        axis.set_ylabel(label)
        axis.grid(axis="y", alpha=0.3)
    latency_axis.legend()
    figure.suptitle(f"{result.model}: {result.provider}, {result.threads} threads")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def op_counts_png(op_counts: dict[str, int], title: str, limit: int = 15) -> bytes:
    """Horizontal bars of the most frequent op types."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = list(op_counts.items())[:limit][::-1]
    figure, axis = plt.subplots(figsize=(6, 0.3 * len(items) + 1.2), dpi=100)
    axis.barh([name for name, _ in items], [count for _, count in items], color="#4c72b0")
    axis.set_xlabel("nodes")
    axis.set_title(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def roofline_figure(result: ProfileResult) -> object:
    """Every executed node a point (achieved GFLOP/s vs FLOP/byte), sized by its time; both roofs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    peak = result.ceilings.gemm_gflops
    bandwidth = result.ceilings.memory_gbps
    colors = {
        "compute": "#c44e52",
        "memory": "#4c72b0",
        "overhead": "#8c8c8c",
        "transfer": "#dd8452",
        "sync": "#937860",
    }
    figure, axis = plt.subplots(figsize=(8, 5.5), dpi=100)
    points = [n for n in result.nodes if n.flops > 0 and n.bytes > 0]
    intensities = [n.flops / n.bytes for n in points] or [1.0]
    low = min(min(intensities) / 2, peak / bandwidth / 10)
    high = max(max(intensities) * 2, peak / bandwidth * 10)
    xs = np.logspace(np.log10(low), np.log10(high), 200)
    axis.plot(
        xs,
        np.minimum(peak, bandwidth * xs),
        color="black",
        linewidth=1.5,
        label=f"roof: {peak:.0f} GFLOP/s, {bandwidth:.1f} GB/s",
    )
    largest = max((n.time_ms for n in points), default=1.0)
    for bound, color in colors.items():
        members = [n for n in points if n.bound == bound]
        if not members:
            continue
        axis.scatter(
            [n.flops / n.bytes for n in members],
            [max(n.achieved_gflops, 1e-3) for n in members],
            s=[20 + 400 * n.time_ms / largest for n in members],
            color=color,
            alpha=0.6,
            edgecolors="black",
            linewidths=0.3,
            label=f"{bound}-bound",
        )
    labelled: set[str] = set()
    for node in sorted(points, key=lambda n: n.time_ms, reverse=True):
        if node.covered_ops in labelled or len(labelled) >= 5:
            continue
        labelled.add(node.covered_ops)
        axis.annotate(
            node.covered_ops,
            (node.flops / node.bytes, max(node.achieved_gflops, 1e-3)),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("arithmetic intensity (FLOP / byte)")
    axis.set_ylabel("achieved GFLOP/s")
    axis.set_title(
        f"roofline: {result.model}, batch {result.batch}, {result.threads} threads (point size = time)"
    )
    axis.grid(True, which="both", alpha=0.25)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    return figure


def breakdown_figure(result: ProfileResult, limit: int = 12) -> object:
    """Horizontal bars: time by op type (as the user's nodes), coloured by bottleneck class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {
        "compute": "#c44e52",
        "memory": "#4c72b0",
        "overhead": "#8c8c8c",
        "transfer": "#dd8452",
        "sync": "#937860",
    }
    rows = result.by_op_type[:limit][::-1]
    figure, axis = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.5), dpi=100)
    axis.barh([r.op_type for r in rows], [r.time_ms for r in rows], color=[colors[r.bound] for r in rows])
    for index, row in enumerate(rows):
        axis.text(row.time_ms, index, f" {100 * row.share:.1f}% {row.bound}", va="center", fontsize=8)
    axis.set_xlabel("ms per run (median)")
    axis.set_title(f"where the time goes: {result.model}, total {result.total_ms:.2f} ms")
    axis.set_xlim(0, max((r.time_ms for r in rows), default=1.0) * 1.35)
    figure.tight_layout()
    return figure


def figure_bytes(figure: object, fmt: str = "png") -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt)  # type: ignore[attr-defined]
    plt.close(figure)
    return buffer.getvalue()


def write_profile_plots(
    result: ProfileResult, path: str | os.PathLike[str], *, force: bool = False
) -> list[Path]:
    """The roofline plot of ``result`` at ``path`` (.png or .svg) and the breakdown chart beside it."""
    from hone.errors import OptionError
    from hone.paths import ensure_writable

    target = Path(path)
    fmt = target.suffix.lower().lstrip(".") or "png"
    if fmt not in ("png", "svg"):
        raise OptionError(f"--plot {target} must end in .png or .svg")
    breakdown = target.with_name(f"{target.stem}-breakdown.{fmt}")
    written = []
    for figure_path, figure in ((target, roofline_figure(result)), (breakdown, breakdown_figure(result))):
        ensure_writable(figure_path, force=force).write_bytes(figure_bytes(figure, fmt))
        written.append(figure_path)
    return written
