"""Plots of results as PNG bytes (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io

from hone.bench import BenchResult


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
    for axis, label in ((latency_axis, "latency ms (p50, whisker to p99)"),
                        (throughput_axis, "throughput samples/s (at p50)")):
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
