"""Profiling: per-operator time, cost, roofline classification, recommendations, trace and plots."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hone.paths import ensure_writable
from hone.profile.profiler import OUTSIDE_NODES_ROW, NodeProfile, OpTypeRow, ProfileResult, profile

__all__ = [
    "OUTSIDE_NODES_ROW",
    "NodeProfile",
    "OpTypeRow",
    "ProfileResult",
    "profile",
    "write_plots",
    "write_trace",
]


def write_trace(result: ProfileResult, path: str | os.PathLike[str], *, force: bool = False) -> Path:
    """A Chrome trace (JSON object format) of the last profiled run, hone's class in each event."""
    target = ensure_writable(path, force=force)
    payload = {
        "traceEvents": result.trace_events,
        "displayTimeUnit": "ms",
        "otherData": {"model": result.model, "batch": result.batch, "bound": result.bound},
    }
    target.write_text(json.dumps(payload), encoding="utf-8")
    return target


def write_plots(result: ProfileResult, path: str | os.PathLike[str], *, force: bool = False) -> list[Path]:
    """The roofline plot at ``path`` (.png or .svg) and the breakdown chart beside it."""
    from hone.errors import OptionError
    from hone.report.plots import breakdown_figure, figure_bytes, roofline_figure

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
