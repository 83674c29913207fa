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

from hone.errors import HoneError, OptionError
from hone.model import Model, load
from hone.quantize.calibration import CalibrationSet, calibration_set
from hone.quantize.fallback import LayerError, rank_layers
from hone.quantize.gate import EVAL_BATCH, AccuracyReport, Budget, EvalPlan, judge, plan_for
from hone.quantize.int8 import FORMATS, METHODS, WEIGHT_TYPES, dynamic_int8, fp16, quantizable_nodes, size_bytes, static_int8

logger = logging.getLogger(__name__)

MODES = ("auto", "static", "dynamic", "fp16")
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

    @property
    def kept_quantized(self) -> bool:
        return self.format != "float"


def quantize(
    source: "str | Model",
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
) -> tuple[Model, QuantizeResult]:
    """Quantize ``source``; returns the kept Model (the float one when nothing passed) and the report.

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
    budget = budget if isinstance(budget, Budget) else Budget.parse(budget)
    original = load(source)
    mode = _choose_mode(original) if mode == "auto" else mode
    if calib is not None and mode == "fp16":
        raise OptionError("--calib is for INT8 (static scales, dynamic smoothing); fp16 needs no calibration data")

    from hone.passes import optimize

    float_model, _ = optimize(original, target="ort-cpu" if mode == "dynamic" else "generic")
    # Dynamic INT8 scales activations per run over the whole batch: judge it at batch 1, the
    # latency target, and report the large-batch figure separately (below).
    plan = plan_for(original, samples=samples, threads=threads, batch=1 if mode == "dynamic" else EVAL_BATCH)
    calibration = calibration_set(float_model, calib) if mode in ("static", "dynamic") else None
    result = QuantizeResult(
        model=original.name, mode=mode, format="float", accuracy=None, kept_float=[], speedup=None,
        size_bytes_before=size_bytes(original), size_bytes_after=0,
        calibration=calibration.description if calibration else "none (fp16 needs no calibration)",
        budget=budget.describe(plan.metric),
    )
    if calibration is not None and calibration.source == "synthesized":
        result.notes.append("calibrated on synthesized inputs: give real samples with --calib for better scales")
    if mode == "dynamic":
        assert calibration is not None
        float_model = _prepare_transformer(float_model, calibration, threads, result)

    builders = _builders(mode, fmt, calibration, method, per_channel, fp16_io)
    built = _judge_all(builders, float_model, plan, budget, exclude=[])
    passing = [(c, m) for c, m in built if c.accuracy.passed]
    if not passing:
        passing, built_more = _fall_back(builders, float_model, plan, budget, calibration, result, threads,
                                                method, per_channel)
        built.extend(built_more)
    result.candidates = [c for c, _ in built]

    kept, kept_model = None, original
    if passing:
        kept, kept_model = _fastest(passing, original, result, threads, measure_speed, bench_budget_s, prefer)
    if kept is None:
        result.size_bytes_after = result.size_bytes_before
        if not passing:
            result.notes.append(f"the budget ({result.budget}) cannot be met by {mode} quantization; "
                                "the float model is kept")
    else:
        kept.chosen = True
        result.format, result.accuracy, result.kept_float = kept.format, kept.accuracy, kept.kept_float
        result.speedup, result.size_bytes_after = kept.speedup, kept.size_bytes
        if mode == "dynamic":
            result.notes.append(_large_batch_note(kept_model, original, samples, threads, budget))
    result.seconds = time.perf_counter() - began
    return kept_model, result


def _large_batch_note(kept_model: Model, original: Model, samples: int, threads: int | None, budget: Budget) -> str:
    wide = plan_for(original, samples=samples, threads=threads, batch=EVAL_BATCH)
    report = judge(kept_model, wide, budget)
    low = "" if report.cosine_min is None else f", min {report.cosine_min:.4f}"
    return (f"judged at batch 1; in batches of up to {EVAL_BATCH} (padded) the same model gives {report.metric} "
            f"{report.candidate_value:.4f}{low} ({'within' if report.passed else 'OUTSIDE'} the budget): dynamic "
            "INT8 takes one activation scale per run, so large padded batches lose precision")


def _prepare_transformer(float_model: Model, calibration: CalibrationSet, threads: int | None,
                         result: QuantizeResult) -> Model:
    """Attention projections as MatMuls, MatMul inputs smoothed (see ``transformer.py``)."""
    from hone.quantize.transformer import SMOOTH_ALPHA, smooth_activations, split_attention_projections

    float_model, split = split_attention_projections(float_model)
    float_model, smoothed = smooth_activations(float_model, calibration.feeds, threads=threads)
    if split:
        result.notes.append(f"split {split} fused attention projection(s) into MatMuls for per-channel INT8")
    if smoothed:
        result.notes.append(f"smoothed {smoothed} MatMul input(s) (SmoothQuant, alpha {SMOOTH_ALPHA:g}) on the "
                            "calibration data")
    return float_model


def _choose_mode(model: Model) -> str:
    """static for a main-graph Conv; dynamic for MatMul/Gemm/Attention anywhere, If/Loop/Scan bodies
    included (dynamic INT8 quantizes bodies; static keeps them float: onnxruntime calibrates the
    main graph only, so Conv found only in bodies is refused with that reason)."""
    from hone.quantize.int8 import graph_op_types, subgraph_nodes

    main = {node.op_type for node in model.ir.graph}
    ops = graph_op_types(model)
    if "Conv" in main:
        return "static"
    if ops & {"MatMul", "Gemm", "Attention"}:
        return "dynamic"
    if "Conv" in ops:
        convs = subgraph_nodes(model, ("Conv",))
        raise OptionError(f"{model.name} has Conv only inside If/Loop/Scan bodies ({', '.join(convs[:3])}"
                          f"{', ...' if len(convs) > 3 else ''}), which static INT8 keeps float (onnxruntime "
                          "calibrates the main graph only); use --mode fp16, which converts the bodies too")
    raise OptionError(f"{model.name} has no Conv, MatMul or Gemm to quantize; nothing for INT8 to speed up")


Builder = tuple[str, str, "object"]  # (candidate name, format, build(float_model, exclude) -> Model)


def _builders(mode: str, fmt: str, calibration: CalibrationSet | None, method: str, per_channel: bool,
              fp16_io: bool = False) -> list[Builder]:
    if mode == "static":
        assert calibration is not None
        formats = FORMATS if fmt == "auto" else (fmt,)
        return [(f"static-{f}", f, lambda m, ex, f=f: static_int8(m, calibration, fmt=f, method=method,
                                                                  per_channel=per_channel, exclude=ex))
                for f in formats]
    if mode == "dynamic":
        return [(f"dynamic-{w}", "dynamic", lambda m, ex, w=w: dynamic_int8(m, per_channel=per_channel, exclude=ex,
                                                                            weight_type=w))
                for w in WEIGHT_TYPES]
    return [("fp16", "fp16", lambda m, ex: fp16(m, exclude=ex, keep_io_types=not fp16_io))]


def _judge_all(builders: list[Builder], float_model: Model, plan: EvalPlan, budget: Budget,
               exclude: list[str]) -> list[tuple[Candidate, Model]]:
    built = []
    for name, fmt, build in builders:
        try:
            candidate_model = build(float_model, exclude)
            accuracy = judge(candidate_model, plan, budget)
        except HoneError as exc:
            logger.warning("candidate %s skipped: %s", name, exc)
            continue
        logger.info("%s: %s %.4f (%s) -> %s", name, accuracy.metric, accuracy.candidate_value, accuracy.budget,
                    "pass" if accuracy.passed else "miss")
        built.append((Candidate(name, name.split("-")[0], fmt, accuracy, list(exclude), size_bytes(candidate_model)),
                      candidate_model))
    return built


def _fall_back(builders, float_model, plan, budget, calibration, result, threads, method="minmax", per_channel=True):
    """Keep the most sensitive layers float, 1, 2, 4, ... until a candidate passes."""
    nodes = quantizable_nodes(float_model)
    # Rank on the QDQ (or dynamic/fp16) candidate: it keeps the float tensor names.
    ranking_builder = next((b for b in builders if b[1] != "qoperator"), None)
    if ranking_builder is None:  # --format qoperator: rank with a QDQ build of the same calibration
        ranking_builder = ("static-qdq", "qdq", lambda m, ex: static_int8(m, calibration, fmt="qdq", method=method,
                                                                          per_channel=per_channel, exclude=ex))
    probe = ranking_builder[2](float_model, [])
    feeds = calibration.feeds[:2] if calibration is not None else plan.feeds[:1]
    ranking = rank_layers(float_model, probe, feeds, nodes, threads)
    result.layer_errors = ranking
    order = [layer.node for layer in ranking]
    built_more: list[tuple[Candidate, object]] = []
    count, best_so_far = 1, float("-inf")
    while order and count <= max(1, len(order) // 2):
        exclude = order[:count]
        attempt = _judge_all(builders, float_model, plan, budget, exclude)
        built_more.extend(attempt)
        passing = [(c, m) for c, m in attempt if c.accuracy.passed]
        if passing:
            result.notes.append(
                f"kept {len(exclude)} most sensitive layer(s) in float to meet the budget: {', '.join(exclude)}"
            )
            return passing, built_more
        best = max((c.accuracy.candidate_value for c, _ in attempt), default=float("-inf"))
        if count > 1 and best <= best_so_far:  # twice the float layers bought nothing: more will not either
            result.notes.append(f"stopped the fallback at {count} float layers: keeping more layers float no longer "
                                f"improved the metric ({best:.4f} after {best_so_far:.4f})")
            break
        best_so_far = max(best_so_far, best)
        count *= 2
    return [], built_more


def _fastest(passing, original: Model, result: QuantizeResult, threads: int | None, measure_speed: bool,
             budget_s: float, prefer: str = "speed") -> tuple[Candidate | None, Model]:
    if not measure_speed:
        candidate, model = min(passing, key=lambda cm: cm[0].size_bytes)
        result.notes.append("speed not measured (asked not to): kept the smallest passing candidate")
        return candidate, model
    import numpy as np

    from hone.bench.race import race
    from hone.data import synthesize
    from hone.runtime import Session, SessionConfig

    # One session per model, blocks alternating (float, candidates, float, ...): noise hits all alike.
    feeds = synthesize(original.inputs, batch=1, dims=original.default_dims, seed=0)
    runners = {}
    for index, model in [(-1, original), *((i, m) for i, (_, m) in enumerate(passing))]:
        session = Session(model, SessionConfig(threads=threads, optimization="all"))
        typed = {spec.name: feeds[spec.name].astype(spec.dtype, copy=False) for spec in model.inputs}
        runners[index] = lambda session=session, typed=typed: session.run(typed)
    rounds: list[dict[int, float]] = []  # per round, each runner's median of that round's block
    seen = {index: 0 for index in runners}

    def record(_: int, timings: dict[int, list[float]]) -> None:
        rounds.append({index: float(np.median(times[seen[index]:])) for index, times in timings.items()})
        seen.update({index: len(times) for index, times in timings.items()})

    pooled = race(runners, rounds=SPEED_ROUNDS, block_s=budget_s / SPEED_ROUNDS, on_round=record)
    result.float_p50_ms = float(np.median(pooled[-1]))
    for index, (candidate, _) in enumerate(passing):
        candidate.p50_ms = float(np.median(pooled[index]))
        candidate.speedup = result.float_p50_ms / candidate.p50_ms
        candidate.faster_every_round = all(r[index] < r[-1] for r in rounds)
    if prefer == "size":
        smallest, model = min(passing, key=lambda cm: (cm[0].size_bytes, cm[0].p50_ms))
        result.notes.append(f"kept the smallest passing candidate ({smallest.name}, {smallest.size_bytes:,} bytes, "
                            f"{smallest.speedup:.2f}x the float model's speed)")
        return smallest, model
    best_candidate, best_model = min(passing, key=lambda cm: cm[0].p50_ms)
    assert best_candidate.speedup is not None
    if best_candidate.speedup < MIN_SPEEDUP or not best_candidate.faster_every_round:
        result.notes.append(
            f"no candidate that passes the gate is measurably faster than float here (best {best_candidate.name}: "
            f"{best_candidate.speedup:.2f}x{'' if best_candidate.faster_every_round else ', not faster in every round'}; "
            f"faster means at least {MIN_SPEEDUP:.2f}x and in each of {SPEED_ROUNDS} rounds); the float model is kept"
        )
        return None, original
    return best_candidate, best_model


__all__ = ["MIN_SPEEDUP", "MODES", "PREFER", "Budget", "Candidate", "QuantizeResult", "quantize"]
