"""The candidates of one quantization: which mode a model gets, one builder per variant of that mode,
and building and judging a list of them.

- ``choose_mode``: static INT8 for a main-graph Conv, dynamic INT8 for MatMul/Gemm/Attention/LSTM;
- ``builders``: static -> QDQ and QOperator (``--format auto``; plus u8u8 and 7-bit variants where
  the CPU's u8s8 kernels saturate, ``hone.cpu.int8_saturates``), dynamic -> s8 and u8 weights, or
  fp16; each builds its candidate from the float model and the nodes to keep float;
- ``judge_all``: build each, judge it with the accuracy gate against the float model, and skip
  (with the reason in a note) one that onnxruntime's quantizer cannot build.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hone.cpu import SATURATION_NOTE, int8_saturates
from hone.errors import OptionError
from hone.model import Model
from hone.quantize.calibration import CalibrationSet
from hone.quantize.gate import Budget, EvalPlan, judge
from hone.quantize.int8 import (
    DYNAMIC_OP_TYPES,
    QuantizationError,
    dynamic_int8,
    fp16,
    quantized_node_count,
    size_bytes,
    static_int8,
)
from hone.quantize.types import (
    FORMATS,
    WEIGHT_TYPES,
    CalibrationMethod,
    Candidate,
    CandidateFormat,
    FormatChoice,
    Mode,
    StaticFormat,
    WeightType,
)

logger = logging.getLogger(__name__)

# A candidate built from the float model with the named nodes kept float.
Build = Callable[[Model, Sequence[str]], Model]
Judged = tuple[Candidate, Model]


@dataclass(frozen=True)
class Builder:
    """How to build one candidate: its name (e.g. "static-qdq"), mode and format, and the build."""

    name: str
    mode: Mode
    format: CandidateFormat
    build: Build


def choose_mode(model: Model) -> tuple[Mode, str | None]:
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


def cpu_notes(mode: Mode) -> list[str]:
    """What this CPU means for ``mode``: static INT8 on u8s8 kernels that saturate (no VNNI)."""
    return [SATURATION_NOTE] if mode == "static" and int8_saturates() else []


def builders(
    mode: Mode,
    fmt: FormatChoice,
    calibration: CalibrationSet | None,
    method: CalibrationMethod,
    per_channel: bool,
    fp16_io: bool = False,
    op_types: tuple[str, ...] = DYNAMIC_OP_TYPES,
) -> list[Builder]:
    """The candidates of ``mode`` in the order they are judged (static and dynamic need ``calibration``)."""
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
            _static_builder(calibration, f, method, per_channel, suffix, reduced, u8u8)
            for suffix, reduced, u8u8 in variants
            for f in formats
        ]
    if mode == "dynamic":
        return [_dynamic_builder(weight_type, per_channel, op_types) for weight_type in WEIGHT_TYPES]

    def build_fp16(model: Model, exclude: Sequence[str]) -> Model:
        return fp16(model, exclude=list(exclude), keep_io_types=not fp16_io)

    return [Builder("fp16", "fp16", "fp16", build_fp16)]


def ranking_builder(
    candidates: Sequence[Builder],
    calibration: CalibrationSet | None,
    method: CalibrationMethod,
    per_channel: bool,
) -> Builder:
    """The build the fallback ranks layers on: the first that keeps the float tensor names (QDQ,
    dynamic, fp16); with ``--format qoperator`` a QDQ build of the same calibration."""
    first = next((b for b in candidates if b.format != "qoperator"), None)
    if first is not None:
        return first
    assert calibration is not None
    return _static_builder(calibration, "qdq", method, per_channel)


def _static_builder(
    calibration: CalibrationSet,
    fmt: StaticFormat,
    method: CalibrationMethod,
    per_channel: bool,
    suffix: str = "",
    reduce_range: bool = False,
    u8u8: bool = False,
) -> Builder:
    def build(model: Model, exclude: Sequence[str]) -> Model:
        return static_int8(
            model,
            calibration,
            fmt=fmt,
            method=method,
            per_channel=per_channel,
            exclude=list(exclude),
            reduce_range=reduce_range,
            u8u8=u8u8,
        )

    return Builder(f"static-{fmt}{suffix}", "static", fmt, build)


def _dynamic_builder(weight_type: WeightType, per_channel: bool, op_types: tuple[str, ...]) -> Builder:
    def build(model: Model, exclude: Sequence[str]) -> Model:
        return dynamic_int8(
            model, per_channel=per_channel, exclude=list(exclude), weight_type=weight_type, op_types=op_types
        )

    return Builder(f"dynamic-{weight_type}", "dynamic", "dynamic", build)


def judge_all(
    candidates: Sequence[Builder],
    float_model: Model,
    plan: EvalPlan,
    budget: Budget,
    exclude: list[str],
    skipped: list[str] | None = None,
) -> list[Judged]:
    """Build every candidate with ``exclude`` kept float and judge it; one whose build fails is left
    out, with the reason logged and appended to ``skipped``."""
    built = []
    for builder in candidates:
        try:
            candidate_model = builder.build(float_model, exclude)
            if builder.format != "fp16" and not quantized_node_count(candidate_model):
                raise QuantizationError("onnxruntime quantized no node of the model")
            accuracy = judge(candidate_model, plan, budget)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's quantizer raises anything; skip, with the reason
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            logger.warning("candidate %s skipped: %s", builder.name, reason)
            if skipped is not None:
                skipped.append(
                    f"candidate {builder.name}"
                    f"{' (' + str(len(exclude)) + ' float layers)' if exclude else ''} skipped: {reason}"
                )
            continue
        logger.info(
            "%s: %s %.4f (%s) -> %s",
            builder.name,
            accuracy.metric,
            accuracy.candidate_value,
            accuracy.budget,
            "pass" if accuracy.passed else "miss",
        )
        candidate = Candidate(
            builder.name,
            builder.mode,
            builder.format,
            accuracy,
            list(exclude),
            size_bytes(candidate_model),
        )
        built.append((candidate, candidate_model))
    return built
