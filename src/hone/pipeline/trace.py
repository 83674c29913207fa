"""A pipeline run's median step as a Chrome trace (chrome://tracing, ui.perfetto.dev)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hone.paths import ensure_writable
from hone.pipeline.types import EventCategory, PipelineResult

_LANES: dict[EventCategory, int] = {"compute": 0, "recv_wait": 1, "optimizer": 0}


def write_trace(result: PipelineResult, path: str | os.PathLike[str], *, force: bool = False) -> Path:
    """The median step as a Chrome trace: one process per stage, compute and recv-wait lanes."""
    target = ensure_writable(path, force=force)
    events: list[dict[str, object]] = []
    for rank, timeline in enumerate(result.timeline):
        events.append({"name": "process_name", "ph": "M", "pid": rank, "args": {"name": f"stage {rank}"}})
        events.append({"name": "thread_name", "ph": "M", "pid": rank, "tid": 0, "args": {"name": "compute"}})
        events.append(
            {"name": "thread_name", "ph": "M", "pid": rank, "tid": 1, "args": {"name": "recv wait"}}
        )
        for event in timeline:
            events.append(
                {
                    "name": event.name,
                    "cat": event.category,
                    "ph": "X",
                    "pid": rank,
                    "tid": _LANES[event.category],
                    "ts": 1000 * event.start_ms,
                    "dur": 1000 * (event.end_ms - event.start_ms),
                }
            )
    payload = {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "model": result.model,
            "schedule": result.schedule,
            "mode": result.mode,
            "stages": len(result.stages),
            "microbatches": result.microbatches,
            "step_ms": result.step_ms,
            "bubble_measured": result.bubble_measured,
            "bubble_formula": result.bubble_formula,
        },
    }
    target.write_text(json.dumps(payload), encoding="utf-8")
    return target
