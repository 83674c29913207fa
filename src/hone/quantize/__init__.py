"""hone quantize: INT8 (static or dynamic) or fp16 candidates, an accuracy gate with per-layer
fallback, and a speed gate that keeps a candidate only if it is measured faster on the target.

The flow, for ``quantize(model)``:

1. optimize the float model first (``hone.optimize``, verified): ``generic`` before static INT8 so
   the quantizer sees standard ops with BatchNorm folded; ``ort-cpu`` before dynamic INT8 so
   attention is fused, then (``transformer.py``) its QKV projection split out into a MatMul and
   every MatMul input smoothed on the calibration data, so per-tensor activation scales fit;
2. build each candidate (``candidates.py``): static -> QDQ and QOperator (``--format auto``),
   dynamic -> s8 and u8 weights, or fp16;
3. judge each against the *original* float model with the accuracy gate (``gate.py``);
4. when none passes, keep layers float (``fallback.py``): those nearest a failing output, then the
   worst 1, 2, 4, ... by what each one's quantization added to the error (``sensitivity.py``),
   until one passes; if even half the layers in float do not pass, the budget cannot be met: hone
   says so and keeps the float model;
5. race the float model and every passing candidate (``speed_gate.py``, one interleaved
   ``hone.bench.compare``) and keep the fastest, only if it beats float by ``MIN_SPEEDUP`` in
   every round. With ``prefer="size"`` (the edge target) the smallest passing candidate is kept
   whatever its speed, and its speed is still reported.

The result types are in ``types.py``; pruning is ``prune.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from hone.data import attach
from hone.errors import OptionError
from hone.model import Model
from hone.quantize.calibration import calibration_set
from hone.quantize.candidates import builders, choose_mode, cpu_notes, judge_all
from hone.quantize.fallback import closest_note, fall_back
from hone.quantize.gate import EVAL_BATCH, Budget, judge, plan_for
from hone.quantize.int8 import dynamic_op_types, size_bytes
from hone.quantize.speed_gate import MIN_SPEEDUP, keep_fastest
from hone.quantize.types import (
    FORMAT_CHOICES,
    METHODS,
    MODES,
    PREFER,
    CalibrationMethod,
    Candidate,
    FormatChoice,
    ModeChoice,
    Prefer,
    QuantizeResult,
    checked_choice,
)
from hone.samples import SampleSet
from hone.sources import load

# The fallback stops trying more float layers after this long (a big detector on many samples).
DEFAULT_TIME_LIMIT_S = 600.0


@dataclass
class Gated:
    """What ``gated_candidates`` built: the loaded model, the float model the candidates were built
    from, every candidate judged, those that passed, and the report so far."""

    original: Model
    float_model: Model
    built: list[tuple[Candidate, Model]]
    passing: list[tuple[Candidate, Model]]
    result: QuantizeResult
    began: float
    budget: Budget


def quantize(
    source: str | Model,
    *,
    mode: ModeChoice | str = "auto",
    fmt: FormatChoice | str = "auto",
    calib: str | None = None,
    method: CalibrationMethod | str = "minmax",
    budget: Budget | str | None = None,
    per_channel: bool = True,
    samples: int = 200,
    threads: int | None = None,
    measure_speed: bool = True,
    bench_budget_s: float = 3.0,
    prefer: Prefer | str = "speed",
    fp16_io: bool = False,
    data: str | SampleSet | None = None,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
) -> tuple[Model, QuantizeResult]:
    """Quantize ``source``; returns the kept Model (the float one when nothing passed) and the report.

    ``time_limit_s`` bounds the fallback: once it is spent, no further set of float layers is tried
    (the candidates judged so far decide, and a note says so).

    ``data`` (``--data``; ``calib`` is its older alias) is split into disjoint calibration and
    evaluation samples; without it the zoo's data, else invented inputs, are used.

    ``fp16_io`` (mode fp16): the model's float inputs and outputs become float16 too; by default
    they stay float32 so callers need not change.
    """
    chosen_prefer = checked_choice(prefer, PREFER, "prefer")
    gated = gated_candidates(
        source,
        mode=mode,
        fmt=fmt,
        calib=calib,
        method=method,
        budget=budget,
        per_channel=per_channel,
        samples=samples,
        threads=threads,
        fp16_io=fp16_io,
        data=data,
        time_limit_s=time_limit_s,
    )
    original, passing, result, began = gated.original, gated.passing, gated.result, gated.began
    resolved, budget = result.mode, gated.budget
    kept, kept_model = None, original
    if passing:
        kept, kept_model = keep_fastest(
            passing, original, result, threads, measure_speed, bench_budget_s, chosen_prefer
        )
    if kept is None:
        result.size_bytes_after = result.size_bytes_before
        if not passing:
            result.notes.append(
                f"the budget ({result.budget}) cannot be met by {resolved} quantization; "
                f"the float model is kept{closest_note(result.candidates)}"
            )
    else:
        kept.chosen = True
        result.format, result.accuracy, result.kept_float = kept.format, kept.accuracy, kept.kept_float
        result.speedup, result.size_bytes_after = kept.speedup, kept.size_bytes
        if resolved == "dynamic":
            result.notes.append(_large_batch_note(kept_model, original, samples, threads, budget))
    result.seconds = time.perf_counter() - began
    return kept_model, result


def _large_batch_note(
    kept_model: Model, original: Model, samples: int, threads: int | None, budget: Budget
) -> str:
    """The kept dynamic INT8 model judged again in large padded batches (it was judged at batch 1)."""
    wide = plan_for(original, samples=samples, threads=threads, batch=EVAL_BATCH)
    report = judge(kept_model, wide, budget)
    low = "" if report.cosine_min is None else f", min {report.cosine_min:.4f}"
    return (
        f"judged at batch 1; in batches of up to {EVAL_BATCH} (padded) the same model gives {report.metric} "
        f"{report.candidate_value:.4f}{low} ({'within' if report.passed else 'OUTSIDE'} the budget): dynamic "
        "INT8 takes one activation scale per run, so large padded batches lose precision"
    )


__all__ = ["MIN_SPEEDUP", "MODES", "PREFER", "Budget", "Candidate", "QuantizeResult", "quantize"]


def gated_candidates(
    source: str | Model,
    *,
    mode: ModeChoice | str = "auto",
    fmt: FormatChoice | str = "auto",
    calib: str | None = None,
    method: CalibrationMethod | str = "minmax",
    budget: Budget | str | None = None,
    per_channel: bool = True,
    samples: int = 200,
    threads: int | None = None,
    fp16_io: bool = False,
    data: str | SampleSet | None = None,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
) -> Gated:
    """Steps 1 to 4 of the flow: every candidate of ``source`` built and judged by the accuracy gate,
    with the fallback when none passes; no speed measured. ``quantize`` races what passes;
    ``hone tune`` races them with its own runtime and server settings. Arguments as ``quantize``.
    """
    began = time.perf_counter()
    chosen_mode = checked_choice(mode, MODES, "mode")
    chosen_format = checked_choice(fmt, FORMAT_CHOICES, "format")
    chosen_method = checked_choice(method, METHODS, "calibration method")
    if samples < 1:
        raise OptionError(f"samples must be at least 1, got {samples}")
    if time_limit_s <= 0:
        raise OptionError(f"the time limit must be positive seconds, got {time_limit_s:g}")
    budget = budget if isinstance(budget, Budget) else Budget.parse(budget)
    if calib is not None and data is not None:
        raise OptionError("--calib is an older name of --data; give one of them")
    original = attach(load(source), data if data is not None else calib)
    mode_note = None
    if chosen_mode == "auto":
        resolved, mode_note = choose_mode(original)
    else:
        resolved = chosen_mode

    from hone.passes import optimize, quantizable_passes

    if resolved == "dynamic":  # ort-cpu's attention fusions, without the FusedGemm the quantizer cannot read
        float_model, _ = optimize(original, target="ort-cpu", passes=quantizable_passes("ort-cpu"))
    else:
        float_model, _ = optimize(original, target="generic")
    # Dynamic INT8 scales activations per run over the whole batch: judge it at batch 1, the
    # latency target, and report the large-batch figure separately (below).
    plan = plan_for(
        original, samples=samples, threads=threads, batch=1 if resolved == "dynamic" else EVAL_BATCH
    )
    float_model.samples = original.samples
    calibration = calibration_set(float_model) if resolved in ("static", "dynamic") else None
    result = QuantizeResult(
        model=original.name,
        mode=resolved,
        format="float",
        accuracy=None,
        kept_float=[],
        speedup=None,
        size_bytes_before=size_bytes(original),
        size_bytes_after=0,
        calibration=calibration.description if calibration else "none (fp16 needs no calibration)",
        budget=budget.describe("all" if len(original.outputs) > 1 else plan.metric),
        evaluation=plan.data,
        data_split=plan.split,
    )
    if mode_note:
        result.notes.append(mode_note)
    result.notes.extend(cpu_notes(resolved))
    if calibration is not None and calibration.source == "synthesized":
        result.notes.append(
            "calibrated on synthesized inputs: give real samples with --calib for better scales"
        )
    if resolved == "dynamic":
        from hone.quantize.transformer import prepare_for_dynamic_int8

        assert calibration is not None
        float_model, prepared = prepare_for_dynamic_int8(float_model, calibration.feeds, threads=threads)
        result.notes.extend(prepared)

    candidates = builders(
        resolved,
        chosen_format,
        calibration,
        chosen_method,
        per_channel,
        fp16_io,
        dynamic_op_types(original),
    )
    built = judge_all(candidates, float_model, plan, budget, exclude=[], skipped=result.notes)
    passing = [(c, m) for c, m in built if c.accuracy.passed]
    if not passing:
        passing, built_more = fall_back(
            candidates,
            float_model,
            plan,
            budget,
            calibration,
            result,
            threads,
            chosen_method,
            per_channel,
            failed=[c for c, _ in built],
            deadline=began + time_limit_s,
        )
        built.extend(built_more)
    result.candidates = [c for c, _ in built]
    return Gated(original, float_model, built, passing, result, began, budget)
