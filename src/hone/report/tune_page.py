"""The page of ``hone tune``: the Pareto front of what it measured, the chosen point highlighted,
and the tables behind it (variants and their gate, session-option races, every point). One
self-contained HTML file (the plot as a data: URI)."""

from __future__ import annotations

import html
import io
from pathlib import Path

from hone.report.markup import image, table
from hone.tune.types import TunePoint, TuneResult


def write_tune_html(result: TuneResult, path: str | Path) -> Path:
    target = Path(path)
    target.write_text(render_tune_html(result), encoding="utf-8")
    return target


def pareto_front(points: list[TunePoint], concurrency: int) -> list[TunePoint]:
    """The points no other point beats on both p99 (lower) and throughput (higher) at ``concurrency``."""
    measured = [(p, p.level(concurrency)) for p in points]
    usable = [(p, lv) for p, lv in measured if lv is not None and lv.requests > 0]
    front = []
    for point, level in usable:
        dominated = any(
            other.p99_ms <= level.p99_ms
            and other.throughput_per_s >= level.throughput_per_s
            and (other.p99_ms < level.p99_ms or other.throughput_per_s > level.throughput_per_s)
            for _, other in usable
        )
        if not dominated:
            front.append(point)
    return front


def pareto_png(result: TuneResult) -> bytes:
    """p99 against throughput, one panel per concurrency, coloured by the variant's accuracy value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = result.concurrencies
    figure, axes = plt.subplots(1, len(levels), figsize=(4.2 * len(levels), 3.8), dpi=100, squeeze=False)
    points = [p for p in result.points if p.stage != "confirm"]
    values = [p.accuracy_value if p.accuracy_value is not None else 1.0 for p in points]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    scatter = None
    for axis, concurrency in zip(axes[0], levels, strict=True):
        xs, ys, colours = [], [], []
        for point, value in zip(points, values, strict=True):
            level = point.level(concurrency)
            if level is None or level.requests == 0:
                continue
            xs.append(level.throughput_per_s)
            ys.append(level.p99_ms)
            colours.append(value)
        scatter = axis.scatter(xs, ys, c=colours, cmap="viridis", vmin=low, vmax=max(high, low + 1e-6), s=28)
        front = sorted(
            (p.level(concurrency) for p in pareto_front(points, concurrency)),
            key=lambda lv: lv.throughput_per_s if lv else 0.0,
        )
        axis.plot(
            [lv.throughput_per_s for lv in front if lv],
            [lv.p99_ms for lv in front if lv],
            color="#999",
            linewidth=1,
            zorder=0,
        )
        for marked, style in ((result.defaults, "s"), (result.chosen, "*")):
            level = marked.level(concurrency) if marked else None
            if level is not None:
                axis.scatter(
                    [level.throughput_per_s],
                    [level.p99_ms],
                    marker=style,
                    s=160 if style == "*" else 70,
                    facecolors="none" if style == "s" else "#d62728",
                    edgecolors="#d62728",
                    label="chosen" if style == "*" else "defaults",
                )
        if result.slo_p99_ms:
            axis.axhline(result.slo_p99_ms, color="#d62728", linestyle="--", linewidth=0.8)
        axis.set_title(f"concurrency {concurrency}")
        axis.set_xlabel("throughput (requests/s)")
        axis.set_ylabel("p99 latency (ms)")
        axis.legend(fontsize=8)
    if scatter is not None:
        figure.colorbar(scatter, ax=axes[0].tolist(), label="accuracy (gate value)")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def render_tune_html(result: TuneResult) -> str:
    e = html.escape
    slo = (
        f"p99 <= {result.slo_p99_ms:g} ms" if result.slo_p99_ms else "no SLO (p99 no worse than the defaults)"
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>hone tune: {e(result.model)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem}"
        "table{border-collapse:collapse;margin:.6rem 0 1.4rem;font-size:.85rem}"
        "th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}"
        "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
        ".chosen{background:#fff3d6}img{max-width:100%}</style></head><body>",
        f"<h1>hone tune: {e(result.model)}</h1>",
        f"<p>{e(result.line())}</p>",
        f"<p>objective {e(result.objective)}; {e(slo)}; concurrency {e(str(result.concurrencies))}; "
        f"budget {result.budget_s / 60:g} min, used {result.seconds:.0f} s; {result.measured} measured, "
        f"{result.cached} from the cache ({e(result.cache_path or 'no cache')})</p>",
        "<h2>Pareto front</h2>",
        "<p>Every point measured under closed-loop load through hone's batcher (single-sample requests);"
        " the square is the defaults, the star the chosen point, the grey line the front.</p>",
        image(pareto_png(result), "Pareto front"),
    ]
    if result.confirmations:
        parts.append("<h2>Chosen vs defaults, interleaved</h2>")
        rows = [
            (
                str(c.concurrency),
                f"{c.default_throughput:.1f}",
                f"{c.chosen_throughput:.1f}",
                f"{c.throughput_ratio:.2f}x",
                ", ".join(f"{r:.2f}" for r in c.throughput_ratio_per_round),
                f"{c.default_p99_ms:.2f}",
                f"{c.chosen_p99_ms:.2f}",
            )
            for c in result.confirmations
        ]
        parts.append(
            table(
                ["c", "defaults req/s", "chosen req/s", "ratio", "per round", "defaults p99", "chosen p99"],
                rows,
            )
        )
    parts.append("<h2>Variants</h2>")
    parts.append(
        table(
            [
                "variant",
                "built as",
                "gate",
                "bytes",
                "p50 b1 ms",
                "vs original",
                "large batch /s",
                "kept",
                "note",
            ],
            [
                (
                    v.name,
                    v.description,
                    v.accuracy,
                    f"{v.size_bytes:,}",
                    _num(v.p50_ms_batch1, ".3f"),
                    _num(v.speedup_batch1, ".2f", "x"),
                    _num(v.samples_per_s_large, ".1f"),
                    "yes" if v.kept else "no",
                    v.note + (" (cached)" if v.cached else ""),
                )
                for v in result.variants
            ],
        )
    )
    if result.runtime_trials:
        parts.append("<h2>Session options (each raced against the base)</h2>")
        parts.append(
            table(
                ["variant", "options", "p50 ms", "vs base", "faster every round", "kept"],
                [
                    (
                        t.variant,
                        t.settings.label(),
                        f"{t.p50_ms:.3f}",
                        f"{t.speedup_vs_base:.2f}x",
                        "yes" if t.faster_every_round else "no",
                        "yes" if t.kept else "no",
                    )
                    for t in result.runtime_trials
                ],
            )
        )
    parts.append("<h2>Every point</h2>")
    header = ["stage", "configuration", "score", "feasible"]
    for c in result.concurrencies:
        header += [f"c={c} req/s", f"c={c} p99 ms"]
    rows_html = []
    for point in result.points:
        cells = [point.stage, point.label, f"{point.score:.2f}", "yes" if point.feasible else "no"]
        for c in result.concurrencies:
            level = point.level(c)
            cells += [
                _num(level.throughput_per_s if level else None, ".1f"),
                _num(level.p99_ms if level else None, ".2f"),
            ]
        css = " class='chosen'" if point is result.chosen else ""
        rows_html.append(f"<tr{css}>" + "".join(f"<td>{e(x)}</td>" for x in cells) + "</tr>")
    parts.append(
        "<table><thead><tr>"
        + "".join(f"<th>{e(h)}</th>" for h in header)
        + "</tr></thead><tbody>"
        + "".join(rows_html)
        + "</tbody></table>"
    )
    if result.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in result.notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _num(value: float | None, fmt: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{suffix}"
