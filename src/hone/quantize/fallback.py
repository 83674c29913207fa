"""The per-layer fallback: when no candidate passes the accuracy gate, keep nodes float until one does.

First, where the failure points at outputs (some outputs pass and others do not, or a float output
loses whole channels), the nodes nearest the failing outputs (``sensitivity.nearest_to_outputs``);
then the layers ranked by what each one's quantization added to the error
(``sensitivity.rank_layers``, on the first build that keeps the float tensor names): 1, 2, 4, ...
of them, at most half. It stops early when twice the float nodes did not bring the worst output
closer to its threshold, and when the time limit is spent; each stop is said in a note.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from hone.model import Model
from hone.quantize.calibration import CalibrationSet
from hone.quantize.candidates import Builder, Judged, judge_all, ranking_builder
from hone.quantize.gate import Budget, EvalPlan
from hone.quantize.int8 import quantizable_nodes
from hone.quantize.sensitivity import nearest_to_outputs, rank_layers
from hone.quantize.types import CalibrationMethod, Candidate, QuantizeResult


def fall_back(
    candidates: Sequence[Builder],
    float_model: Model,
    plan: EvalPlan,
    budget: Budget,
    calibration: CalibrationSet | None,
    result: QuantizeResult,
    threads: int | None,
    method: CalibrationMethod = "minmax",
    per_channel: bool = True,
    failed: Sequence[Candidate] = (),
    deadline: float = float("inf"),
) -> tuple[list[Judged], list[Judged]]:
    """Keep nodes float until a candidate passes: first the nodes nearest the outputs that failed
    (output-aware), then the most sensitive layers by measured error, 1, 2, 4, ... of each.
    Returns the passing candidates (none: the budget cannot be met) and every one built here; the
    notes and the layer ranking go into ``result``."""
    built_more: list[Judged] = []
    # Output-aware first where the failure points at an output: some outputs pass and others do not,
    # or a float output loses whole channels (one INT8 scale for a tensor of several ranges).
    failing = sorted(
        {
            o.name
            for c in failed
            for o in c.accuracy.outputs
            if not o.passed
            and (o.metric == "channel-error" or len(c.accuracy.failing_outputs) < len(c.accuracy.outputs))
        }
    )
    if failing:
        near = nearest_to_outputs(float_model, failing)
        passing = _try_exclusions(
            candidates,
            float_model,
            plan,
            budget,
            result,
            near,
            built_more,
            f"node(s) nearest the failing output(s) {', '.join(failing)}",
            limit=len(near),
            deadline=deadline,
        )
        if passing:
            return passing, built_more
    if _out_of_time(deadline, result, "ranking the layers by sensitivity"):
        return [], built_more
    nodes = quantizable_nodes(float_model)
    # Rank on the QDQ (or dynamic/fp16) candidate: it keeps the float tensor names.
    ranker = ranking_builder(candidates, calibration, method, per_channel)
    try:
        probe = ranker.build(float_model, [])
        feeds = calibration.feeds[:2] if calibration is not None else plan.feeds[:1]
        ranking = rank_layers(float_model, probe, feeds, nodes, threads)
    except Exception as exc:  # noqa: BLE001 - a quantizer failure skips the ranking, with its reason
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        result.notes.append(
            f"the per-layer sensitivity probe ({ranker.name}) failed, so no layer could be ranked: {reason}"
        )
        return [], built_more
    result.layer_errors = ranking
    order = [layer.node for layer in ranking]
    passing = _try_exclusions(
        candidates,
        float_model,
        plan,
        budget,
        result,
        order,
        built_more,
        "most sensitive layer(s)",
        limit=max(1, len(order) // 2),
        deadline=deadline,
    )
    return passing, built_more


def closest_note(candidates: Sequence[Candidate]) -> str:
    """ ", the closest: NAME (K nodes float) with METRIC VALUE" for the candidate nearest its budget."""
    if not candidates:
        return ""
    best = max(candidates, key=lambda c: c.accuracy.margin)
    floats = f" with {len(best.kept_float)} node(s) float" if best.kept_float else ""
    value = best.accuracy.candidate_value
    shown = f"{value:.1%}" if best.accuracy.metric in ("agreement", "exact") else f"{value:.4g}"
    return f"; the closest was {best.name}{floats}: {best.accuracy.name} {shown}"


def _out_of_time(deadline: float, result: QuantizeResult, next_step: str) -> bool:
    """Whether the time limit is spent; if so, a note says what was not tried."""
    if time.perf_counter() < deadline:
        return False
    result.notes.append(f"the time limit was spent before {next_step}; raise --time-limit-s to try more")
    return True


def _try_exclusions(
    candidates: Sequence[Builder],
    float_model: Model,
    plan: EvalPlan,
    budget: Budget,
    result: QuantizeResult,
    order: list[str],
    built_more: list[Judged],
    why: str,
    limit: int,
    deadline: float = float("inf"),
) -> list[Judged]:
    """Exclude the first 1, 2, 4, ... of ``order`` (at most ``limit``) until a candidate passes."""
    count, best_so_far = 1, float("-inf")
    while order and count <= limit:
        if _out_of_time(deadline, result, f"keeping {count} {why} float"):
            break
        exclude = order[:count]
        attempt = judge_all(candidates, float_model, plan, budget, exclude, skipped=result.notes)
        built_more.extend(attempt)
        passing = [(c, m) for c, m in attempt if c.accuracy.passed]
        if passing:
            result.notes.append(
                f"kept {len(exclude)} {why} in float to meet the budget: {', '.join(exclude)}"
            )
            return passing
        best = max((c.accuracy.margin for c, _ in attempt), default=float("-inf"))
        if count > 1 and best <= best_so_far:  # twice the float nodes bought nothing: more will not either
            result.notes.append(
                f"stopped keeping {why} float at {count}: more float nodes no longer moved "
                f"the worst output closer to its threshold (margin {best:.4f} after {best_so_far:.4f})"
            )
            break
        best_so_far = max(best_so_far, best)
        if count == limit:
            break
        count = min(count * 2, limit)
    return []
