"""Profiling: per-operator time, cost, roofline classification, recommendations and the trace.

The profile computes; its callers render it (terminal tables, HTML and the roofline plots are in
``hone.report``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hone.paths import ensure_writable
from hone.profile.profiler import profile
from hone.profile.types import OUTSIDE_NODES_ROW, NodeProfile, OpTypeRow, ProfileResult, Recommendation

__all__ = [
    "OUTSIDE_NODES_ROW",
    "NodeProfile",
    "OpTypeRow",
    "ProfileResult",
    "Recommendation",
    "profile",
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
