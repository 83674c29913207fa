"""hone quantize: INT8 (static or dynamic) or fp16 candidates, an accuracy gate with per-layer
fallback, and a speed gate that keeps a candidate only if it is measured faster on the target.

The flow, for ``quantize(model)``:

1. optimize the float model first (``hone.optimize``, verified): ``generic`` before static INT8 so
   the quantizer sees standard ops with BatchNorm folded; ``ort-cpu`` before dynamic INT8 so
   attention is fused, then (``transformer.py``) its QKV projection split out into a MatMul and
   every MatMul input smoothed on the calibration data, so per-tensor activation scales fit;
2. build each candidate: static -> QDQ and QOperator (``--format auto``), dynamic -> s8 and u8
   weights, or fp16;
3. judge each against the *original* float model with the accuracy gate (``gate.py``);
4. when none passes, rank the layers by what each one's quantization added to the error
   (``fallback.py``) and keep the worst 1, 2, 4, ... in float until one passes; if even half the
   layers in float do not pass, the budget cannot be met: hone says so and keeps the float model;
5. time the float model and every passing candidate at ORT_ENABLE_ALL on the target's threads,
   in alternating blocks (``hone.bench.race``), and keep the fastest, only if it beats float by
   ``MIN_SPEEDUP`` (INT8 is not always faster: QDQ on CPUs without
   VNNI, tiny models dominated by overhead). With ``prefer="size"`` (the edge target) the
   smallest passing candidate is kept whatever its speed, and its speed is still reported.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from hone.cpu import SATURATION_NOTE, int8_saturates
from hone.data import SampleSet, attach
from hone.errors import OptionError
from hone.model import Model, load
from hone.quantize.calibration import CalibrationSet, calibration_set
from hone.quantize.fallback import LayerError, nearest_to_outputs, rank_layers
from hone.quantize.gate import EVAL_BATCH, AccuracyReport, Budget, EvalPlan, judge, plan_for
from hone.quantize.int8 import (
    DYNAMIC_OP_TYPES,
    FORMATS,
    METHODS,
    WEIGHT_TYPES,
    QuantizationError,
    dynamic_int8,
    dynamic_op_types,
    fp16,
    quantizable_nodes,
    quantized_node_count,
    size_bytes,
    static_int8,
)
from hone.verify import OutputJudgement

logger = logging.getLogger(__name__)

MODES = ("auto", "static", "dynamic", "fp16")
# The fallback stops trying more float layers after this long (a big detector on many samples).
DEFAULT_TIME_LIMIT_S = 600.0
# A candidate must beat the float model by this factor to be kept for speed: on this shared machine
# two timings of the same model differ by up to a few percent, so a smaller gain is not a gain.
MIN_SPEEDUP = 1.05
SPEED_ROUNDS = 3  # alternating rounds of the speed gate; a candidate must be faster in each
PREFER = ("speed", "size")


@dataclass
class Candidate:
    """One quantized variant, judged and (when it passed) timed."""

    name: str  # e.g. "static-qdq", "dynamic", "fp16"
    mode: str
    format: str
    accuracy: AccuracyReport
    kept_float: list[str]
    size_bytes: int
    p50_ms: float | None = None
    speedup: float | None = None  # float p50 / this p50, measured in the same run
    faster_every_round: bool | None = None  # faster than float in each round of the speed gate
    chosen: bool = False


@dataclass
class QuantizeResult:
    model: str
    mode: str
    format: str  # of the kept model: "qdq" | "qoperator" | "dynamic" | "fp16" | "float"
    accuracy: AccuracyReport | None  # of the kept candidate (None when float was kept)
    kept_float: list[str]  # layers left in float by the gate, with the reason in ``layer_errors``
    speedup: float | None  # kept model vs the float model, measured on the target
    size_bytes_before: int
    size_bytes_after: int
    calibration: str
    budget: str
    float_p50_ms: float | None = None
    candidates: list[Candidate] = field(default_factory=list)
    layer_errors: list[LayerError] = field(default_factory=list)  # worst first, when the fallback ran
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    evaluation: str = ""  # the samples the gate judged on
    data_split: str = ""  # how calibration and evaluation samples were split

    @property
    def outputs(self) -> list[OutputJudgement]:
        """The per-output table of the kept candidate (else of the best candidate judged)."""
        if self.accuracy is not None:
            return self.accuracy.outputs
        judged = [c.accuracy for c in self.candidates]
        return max(judged, key=lambda a: a.margin).outputs if judged else []

    @property
    def kept_quantized(self) -> bool:
        return self.format != "float"


def quantize(
    source: str | Model,
    *,
    mode: str = "auto",
    fmt: str = "auto",
    calib: str | None = None,
    method: str = "minmax",
    budget: Budget | str | None = None,
    per_channel: bool = True,
    samples: int = 200,
    threads: int | None = None,
    measure_speed: bool = True,
    bench_budget_s: float = 3.0,
    prefer: str = "speed",
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
    began = time.perf_counter()
    if mode not in MODES:
        raise OptionError(f"mode {mode!r} is unknown; choose one of: {', '.join(MODES)}")
    if fmt not in (*FORMATS, "auto"):
        raise OptionError(f"format {fmt!r} is unknown; choose one of: {', '.join(FORMATS)}, auto")
    if method not in METHODS:
        raise OptionError(f"calibration method {method!r} is unknown; choose one of: {', '.join(METHODS)}")
    if prefer not in PREFER:
        raise OptionError(f"prefer {prefer!r} is unknown; choose one of: {', '.join(PREFER)}")
    if samples < 1:
        raise OptionError(f"samples must be at least 1, got {samples}")
    if time_limit_s <= 0:
        raise OptionError(f"the time limit must be positive seconds, got {time_limit_s:g}")
    budget = budget if isinstance(budget, Budget) else Budget.parse(budget)
    if calib is not None and data is not None:
        raise OptionError("--calib is an older name of --data; give one of them")
    original = attach(load(source), data if data is not None else calib)
    chosen_note = None
    if mode == "auto":
        mode, chosen_note = _choose_mode(original)

    from hone.passes import optimize, quantizable_passes

    if mode == "dynamic":  # ort-cpu's attention fusions, without the FusedGemm the quantizer cannot read
        float_model, _ = optimize(original, target="ort-cpu", passes=quantizable_passes("ort-cpu"))
    else:
        float_model, _ = optimize(original, target="generic")
    # Dynamic INT8 scales activations per run over the whole batch: judge it at batch 1, the
    # latency target, and report the large-batch figure separately (below).
    plan = plan_for(original, samples=samples, threads=threads, batch=1 if mode == "dynamic" else EVAL_BATCH)
    float_model.samples = original.samples
    calibration = calibration_set(float_model) if mode in ("static", "dynamic") else None
    result = QuantizeResult(
        model=original.name,
        mode=mode,
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
    if chosen_note:
        result.notes.append(chosen_note)
    if mode == "static" and int8_saturates():
        result.notes.append(SATURATION_NOTE)
    if calibration is not None and calibration.source == "synthesized":
        result.notes.append(
            "calibrated on synthesized inputs: give real samples with --calib for better scales"
        )
    if mode == "dynamic":
        assert calibration is not None
        float_model = _prepare_transformer(float_model, calibration, threads, result)

    builders = _builders(mode, fmt, calibration, method, per_channel, fp16_io, dynamic_op_types(original))
    built = _judge_all(builders, float_model, plan, budget, exclude=[], skipped=result.notes)
    passing = [(c, m) for c, m in built if c.accuracy.passed]
    if not passing:
        passing, built_more = _fall_back(
            builders,
            float_model,
            plan,
            budget,
            calibration,
            result,
            threads,
            method,
            per_channel,
            failed=[c for c, _ in built],
            deadline=began + time_limit_s,
        )
        built.extend(built_more)
    result.candidates = [c for c, _ in built]

    kept, kept_model = None, original
    if passing:
        kept, kept_model = _fastest(passing, original, result, threads, measure_speed, bench_budget_s, prefer)
    if kept is None:
        result.size_bytes_after = result.size_bytes_before
        if not passing:
            result.notes.append(
                f"the budget ({result.budget}) cannot be met by {mode} quantization; "
                f"the float model is kept{_closest(result.candidates)}"
            )
    else:
        kept.chosen = True
        result.format, result.accuracy, result.kept_float = kept.format, kept.accuracy, kept.kept_float
        result.speedup, result.size_bytes_after = kept.speedup, kept.size_bytes
        if mode == "dynamic":
            result.notes.append(_large_batch_note(kept_model, original, samples, threads, budget))
    result.seconds = time.perf_counter() - began
    return kept_model, result


def _closest(candidates: list[Candidate]) -> str:
    """ ", the closest: NAME (K nodes float) with METRIC VALUE" for the candidate nearest its budget."""
    if not candidates:
        return ""
    best = max(candidates, key=lambda c: c.accuracy.margin)
    floats = f" with {len(best.kept_float)} node(s) float" if best.kept_float else ""
    value = best.accuracy.candidate_value
    shown = f"{value:.1%}" if best.accuracy.metric in ("agreement", "exact") else f"{value:.4g}"
    return f"; the closest was {best.name}{floats}: {best.accuracy.name} {shown}"


def _large_batch_note(
    kept_model: Model, original: Model, samples: int, threads: int | None, budget: Budget
) -> str:
    wide = plan_for(original, samples=samples, threads=threads, batch=EVAL_BATCH)
    report = judge(kept_model, wide, budget)
    low = "" if report.cosine_min is None else f", min {report.cosine_min:.4f}"
    return (
        f"judged at batch 1; in batches of up to {EVAL_BATCH} (padded) the same model gives {report.metric} "
        f"{report.candidate_value:.4f}{low} ({'within' if report.passed else 'OUTSIDE'} the budget): dynamic "
        "INT8 takes one activation scale per run, so large padded batches lose precision"
    )


def _prepare_transformer(
    float_model: Model, calibration: CalibrationSet, threads: int | None, result: QuantizeResult
) -> Model:
    """Attention projections as MatMuls, MatMul inputs smoothed (see ``transformer.py``)."""
    from hone.quantize.transformer import SMOOTH_ALPHA, smooth_activations, split_attention_projections

    float_model, split = split_attention_projections(float_model)
    float_model, smoothed = smooth_activations(float_model, calibration.feeds, threads=threads)
    if split:
        result.notes.append(f"split {split} fused attention projection(s) into MatMuls for per-channel INT8")
    if smoothed:
        result.notes.append(
            f"smoothed {smoothed} MatMul input(s) (SmoothQuant, alpha {SMOOTH_ALPHA:g}) on the "
            "calibration data"
        )
    return float_model


def _choose_mode(model: Model) -> tuple[str, str | None]:
    """static for a main-graph Conv; dynamic for MatMul/Gemm/Attention/LSTM anywhere, If/Loop/Scan
    bodies included (dynamic INT8 quantizes bodies; static keeps them float: onnxruntime calibrates
    the main graph only, so a model with Conv only in bodies gets dynamic ConvInteger, said in a note).
    Returns the mode and that note (None when there is nothing to say)."""
    from hone.quantize.int8 import graph_op_types, subgraph_nodes

    main = {node.op_type for node in model.ir.graph}
    ops = graph_op_types(model)
    if "Conv" in main:
        return "static", None
    if ops & {"MatMul", "Gemm", "Attention", "LSTM"}:
        return "dynamic", None
    if "Conv" in ops:
        convs = subgraph_nodes(model, ("Conv",))
        return (
            "dynamic",
            (
                f"Conv only inside If/Loop/Scan bodies ({', '.join(convs[:2])}"
                f"{', ...' if len(convs) > 2 else ''}): static INT8 would keep them float "
                "(onnxruntime calibrates the main graph only), so dynamic INT8 (ConvInteger) was tried"
            ),
        )
    raise OptionError(
        f"{model.name} has no Conv, MatMul, Gemm or LSTM to quantize; nothing for INT8 to speed up"
    )


Builder = tuple[str, str, "object"]  # (candidate name, format, build(float_model, exclude) -> Model)


def _builders(
    mode: str,
    fmt: str,
    calibration: CalibrationSet | None,
    method: str,
    per_channel: bool,
    fp16_io: bool = False,
    op_types: tuple[str, ...] = DYNAMIC_OP_TYPES,
) -> list[Builder]:
    if mode == "static":
        assert calibration is not None
        formats = FORMATS if fmt == "auto" else (fmt,)
        # Where the u8s8 kernels saturate, the u8u8 variant comes first: the fallback ranks layers on the
        # first QDQ build, whose float simulation matches what those kernels compute.
        variants = (
            (("-u8u8", False, True), ("-7bit", True, False), ("", False, False))
            if int8_saturates()
            else (("", False, False),)
        )
        return [
            (
                f"static-{f}{suffix}",
                f,
                lambda m, ex, f=f, reduced=reduced, u8u8=u8u8: static_int8(
                    m,
                    calibration,
                    fmt=f,
                    method=method,
                    per_channel=per_channel,
                    exclude=ex,
                    reduce_range=reduced,
                    u8u8=u8u8,
                ),
            )
            for suffix, reduced, u8u8 in variants
            for f in formats
        ]
    if mode == "dynamic":
        return [
            (
                f"dynamic-{w}",
                "dynamic",
                lambda m, ex, w=w: dynamic_int8(
                    m, per_channel=per_channel, exclude=ex, weight_type=w, op_types=op_types
                ),
            )
            for w in WEIGHT_TYPES
        ]
    return [("fp16", "fp16", lambda m, ex: fp16(m, exclude=ex, keep_io_types=not fp16_io))]


def _judge_all(
    builders: list[Builder],
    float_model: Model,
    plan: EvalPlan,
    budget: Budget,
    exclude: list[str],
    skipped: list[str] | None = None,
) -> list[tuple[Candidate, Model]]:
    built = []
    for name, fmt, build in builders:
        try:
            candidate_model = build(float_model, exclude)
            if fmt != "fp16" and not quantized_node_count(candidate_model):
                raise QuantizationError("onnxruntime quantized no node of the model")
            accuracy = judge(candidate_model, plan, budget)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's quantizer raises anything; skip, with the reason
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            logger.warning("candidate %s skipped: %s", name, reason)
            if skipped is not None:
                skipped.append(
                    f"candidate {name}{' (' + str(len(exclude)) + ' float layers)' if exclude else ''} "
                    f"skipped: {reason}"
                )
            continue
        logger.info(
            "%s: %s %.4f (%s) -> %s",
            name,
            accuracy.metric,
            accuracy.candidate_value,
            accuracy.budget,
            "pass" if accuracy.passed else "miss",
        )
        built.append(
            (
                Candidate(
                    name, name.split("-")[0], fmt, accuracy, list(exclude), size_bytes(candidate_model)
                ),
                candidate_model,
            )
        )
    return built


def _fall_back(
    builders,
    float_model,
    plan,
    budget,
    calibration,
    result,
    threads,
    method="minmax",
    per_channel=True,
    failed=(),
    deadline: float = float("inf"),
):
    """Keep nodes float until a candidate passes: first the nodes nearest the outputs that failed
    (output-aware), then the most sensitive layers by measured error, 1, 2, 4, ... of each."""
    built_more: list[tuple[Candidate, object]] = []
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
            builders,
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
    ranking_builder = next((b for b in builders if b[1] != "qoperator"), None)
    if ranking_builder is None:  # --format qoperator: rank with a QDQ build of the same calibration
        ranking_builder = (
            "static-qdq",
            "qdq",
            lambda m, ex: static_int8(
                m, calibration, fmt="qdq", method=method, per_channel=per_channel, exclude=ex
            ),
        )
    try:
        probe = ranking_builder[2](float_model, [])
        feeds = calibration.feeds[:2] if calibration is not None else plan.feeds[:1]
        ranking = rank_layers(float_model, probe, feeds, nodes, threads)
    except Exception as exc:  # noqa: BLE001 - a quantizer failure skips the ranking, with its reason
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        result.notes.append(
            f"the per-layer sensitivity probe ({ranking_builder[0]}) failed, so no layer could be "
            f"ranked: {reason}"
        )
        return [], built_more
    result.layer_errors = ranking
    order = [layer.node for layer in ranking]
    passing = _try_exclusions(
        builders,
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


def _out_of_time(deadline: float, result: QuantizeResult, next_step: str) -> bool:
    """Whether the time limit is spent; if so, a note says what was not tried."""
    if time.perf_counter() < deadline:
        return False
    result.notes.append(f"the time limit was spent before {next_step}; raise --time-limit-s to try more")
    return True


def _try_exclusions(
    builders,
    float_model,
    plan,
    budget,
    result,
    order,
    built_more,
    why: str,
    limit: int,
    deadline: float = float("inf"),
):
    """Exclude the first 1, 2, 4, ... of ``order`` (at most ``limit``) until a candidate passes."""
    count, best_so_far = 1, float("-inf")
    while order and count <= limit:
        if _out_of_time(deadline, result, f"keeping {count} {why} float"):
            break
        exclude = order[:count]
        attempt = _judge_all(builders, float_model, plan, budget, exclude, skipped=result.notes)
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


def _fastest(
    passing,
    original: Model,
    result: QuantizeResult,
    threads: int | None,
    measure_speed: bool,
    budget_s: float,
    prefer: str = "speed",
) -> tuple[Candidate | None, Model]:
    if not measure_speed:
        candidate, model = min(passing, key=lambda cm: cm[0].size_bytes)
        result.notes.append("speed not measured (asked not to): kept the smallest passing candidate")
        return candidate, model
    import numpy as np

    from hone.bench.race import race
    from hone.data import feeds as sample_feeds
    from hone.runtime import Session, SessionConfig

    # One session per model, blocks alternating (float, candidates, float, ...): noise hits all alike.
    feeds = sample_feeds(original, batch=1, seed=0)
    runners = {}
    for index, model in [(-1, original), *((i, m) for i, (_, m) in enumerate(passing))]:
        session = Session(model, SessionConfig(threads=threads, optimization="all"))
        typed = {spec.name: feeds[spec.name].astype(spec.dtype, copy=False) for spec in model.inputs}
        runners[index] = lambda session=session, typed=typed: session.run(typed)
    rounds: list[dict[int, float]] = []  # per round, each runner's median of that round's block
    seen = {index: 0 for index in runners}

    def record(_: int, timings: dict[int, list[float]]) -> None:
        rounds.append({index: float(np.median(times[seen[index] :])) for index, times in timings.items()})
        seen.update({index: len(times) for index, times in timings.items()})

    pooled = race(runners, rounds=SPEED_ROUNDS, block_s=budget_s / SPEED_ROUNDS, on_round=record)
    result.float_p50_ms = float(np.median(pooled[-1]))
    for index, (candidate, _) in enumerate(passing):
        candidate.p50_ms = float(np.median(pooled[index]))
        candidate.speedup = result.float_p50_ms / candidate.p50_ms
        candidate.faster_every_round = all(r[index] < r[-1] for r in rounds)
    if prefer == "size":
        smallest, model = min(passing, key=lambda cm: (cm[0].size_bytes, cm[0].p50_ms))
        result.notes.append(
            f"kept the smallest passing candidate ({smallest.name}, {smallest.size_bytes:,} bytes, "
            f"{smallest.speedup:.2f}x the float model's speed)"
        )
        return smallest, model
    best_candidate, best_model = min(passing, key=lambda cm: cm[0].p50_ms)
    assert best_candidate.speedup is not None
    if best_candidate.speedup < MIN_SPEEDUP or not best_candidate.faster_every_round:
        every_round = "" if best_candidate.faster_every_round else ", not faster in every round"
        result.notes.append(
            "no candidate that passes the gate is measurably faster than float here (best"
            f" {best_candidate.name}:"
            f" {best_candidate.speedup:.2f}x{every_round};"
            f" faster means at least {MIN_SPEEDUP:.2f}x and in each of {SPEED_ROUNDS} rounds); the float"
            " model is kept"
        )
        return None, original
    return best_candidate, best_model


__all__ = ["MIN_SPEEDUP", "MODES", "PREFER", "Budget", "Candidate", "QuantizeResult", "quantize"]
