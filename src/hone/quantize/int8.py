"""Build one quantized candidate: static INT8 (QDQ or QOperator), dynamic INT8, or fp16.

onnxruntime's quantization tools do the arithmetic (``quantize_static`` with a calibration
reader, ``quantize_dynamic``, and ``onnxruntime.transformers.float16``); this module only feeds
them a Model and hands back a Model, through a temporary folder (they work on files).

Defaults, and why:
- weights INT8, symmetric, per output channel (per-tensor scales lose the small channels; on
  minilm per-channel lifts the embedding cosine from 0.96 to 0.99 mean);
- activations UINT8 asymmetric for static (what onnxruntime's CPU kernels are fastest with: the
  u8s8 GEMM path);
- ``reduce_range`` (7-bit weights) off, except as extra candidates on x86 CPUs without VNNI
  (``hone.cpu.int8_saturates``), whose u8s8 kernels add products in saturating int16; the gate
  picks between the two by measurement. Static u8 weights are not offered: asymmetric u8
  per-channel QLinearConv measured 0.11 top-1 agreement and 28x slower on efficientnet_lite0
  (onnxruntime 1.32, AVX2), and symmetric u8 is turned back into s8 by onnxruntime.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from hone.errors import HoneError
from hone.model import Model
from hone.quantize.calibration import CalibrationSet
from hone.quantize.types import (
    FORMAT_CHOICES,
    FORMATS,
    METHODS,
    WEIGHT_TYPES,
    CalibrationMethod,
    StaticFormat,
    WeightType,
    checked_choice,
)

logger = logging.getLogger(__name__)

# The compute-heavy ops static INT8 turns into INT8 kernels (named when a body keeps them float).
STATIC_OP_TYPES = ("Conv", "MatMul", "Gemm")
# Ops that fp16 conversion keeps in float32: onnxruntime's own block list plus ops whose fp16
# kernels lose too much (reductions and normalizations accumulate in the output type).
FP16_KEEP_FLOAT = (
    "Resize",
    "Range",
    "ReduceL2",
    "ReduceSum",
    "ReduceMean",
    "LayerNormalization",
    "SkipLayerNormalization",
    "Softmax",
    "Pow",
    "Sqrt",
    "Erf",
)


class _NoPreprocessAdvice(logging.Filter):
    """Drops two warnings onnxruntime's quantizer logs on the root logger: "Please consider
    pre-processing" (hone optimizes, folds and infers shapes before it quantizes, so the advice is
    already followed), "Inference failed or unsupported type to quantize for tensor" (said, with
    the whole type proto, once per run for every integer tensor such as token or byte ids, which
    are never quantized) and "Axis 1 is out-of-range for weight" (per channel asked, a rank-1
    weight such as LayerNorm's is quantized per tensor): none is something a user can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith("Axis ") and "is out-of-range for weight" in message:
            return False
        return not message.startswith(("Please consider", "Inference failed or unsupported type to quantize"))


logging.getLogger().addFilter(_NoPreprocessAdvice())


class QuantizationError(HoneError):
    """onnxruntime's quantizer could not quantize this model."""


def static_int8(
    float_model: Model,
    calibration: CalibrationSet,
    *,
    fmt: StaticFormat = "qdq",
    method: CalibrationMethod = "minmax",
    per_channel: bool = True,
    exclude: list[str] | tuple[str, ...] = (),
    reduce_range: bool = False,
    u8u8: bool = False,
) -> Model:
    """Static INT8 of ``float_model`` calibrated on ``calibration``; ``exclude`` names nodes kept float;
    ``reduce_range`` quantizes weights to 7 bits (no int16 saturation on CPUs without VNNI);
    ``u8u8`` records ``U8U8_SESSION_CONFIG`` in the model, with which onnxruntime runs layers whose
    weights need all 8 bits on its u8u8 kernels (no saturation, slower) on CPUs without VNNI.

    Nodes inside If/Loop/Scan bodies stay float: onnxruntime calibrates tensors of the main graph
    only (its QDQ quantizer skips bodies; its QOperator one fails on them), so a warning names them
    and the step counts them.

    Per-channel QDQ below opset 13 (whose QuantizeLinear/DequantizeLinear have no ``axis``): the
    model is upgraded to opset 13 first, or, when that conversion fails, quantized per tensor with a
    warning and a note in its steps (``_per_channel_opset``). QOperator needs no upgrade: its
    QLinearConv takes per-channel weight scales from opset 10 on.
    """
    from onnxruntime import quantization as q

    if fmt not in FORMATS:  # the choices the user picks from: auto too
        checked_choice(fmt, FORMAT_CHOICES, "format")
    checked_choice(method, METHODS, "calibration method")
    methods = {
        "minmax": q.CalibrationMethod.MinMax,
        "percentile": q.CalibrationMethod.Percentile,
        "entropy": q.CalibrationMethod.Entropy,
    }
    extra: dict[str, bool | float] = {"WeightSymmetric": True, "ActivationSymmetric": False}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    opset_step = ""
    if fmt == "qdq" and per_channel and _onnx_opset(float_model) < PER_CHANNEL_MIN_OPSET:
        float_model, per_channel, opset_step = _per_channel_opset(float_model)
    in_bodies = subgraph_nodes(float_model, STATIC_OP_TYPES)
    if in_bodies:
        opset_step += f", {len(in_bodies)} If/Loop/Scan body nodes kept float"
        if not exclude:  # once per format, not again for every fallback attempt
            logger.warning(
                "static INT8 keeps %d node(s) inside If/Loop/Scan bodies float (%s): onnxruntime "
                "calibrates the main graph only; --mode dynamic or fp16 reaches them",
                len(in_bodies),
                ", ".join(in_bodies[:5]) + (", ..." if len(in_bodies) > 5 else ""),
            )
    with tempfile.TemporaryDirectory(prefix="hone-quant-") as folder:
        source = _save(float_model, Path(folder) / "float.onnx")
        target = Path(folder) / "int8.onnx"
        try:
            q.quantize_static(
                str(source),
                str(target),
                calibration.reader(),
                quant_format=q.QuantFormat.QDQ if fmt == "qdq" else q.QuantFormat.QOperator,
                per_channel=per_channel,
                activation_type=q.QuantType.QUInt8,
                weight_type=q.QuantType.QInt8,
                calibrate_method=methods[method],
                nodes_to_exclude=list(exclude),
                extra_options=extra,
                use_external_data_format=_is_large(float_model),
                reduce_range=reduce_range,
            )
        except Exception as exc:  # the quantizer raises many kinds; the user needs one line
            raise QuantizationError(
                f"onnxruntime could not quantize {float_model.name} statically ({fmt}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        quantized = _load(
            float_model,
            target,
            f"quantize static int8 {fmt} {method}"
            + (" 7-bit weights" if reduce_range else "")
            + opset_step
            + (f", {len(exclude)} nodes kept float" if exclude else ""),
        )
        return quantized.with_session_config(U8U8_SESSION_CONFIG) if u8u8 else quantized


# onnxruntime's session option (since 1.13) that, on x86 CPUs without VNNI, turns u8s8 products
# whose weights fall outside [-64, 63] into u8u8 ones, which do not saturate int16.
U8U8_SESSION_CONFIG = {"session.x64quantprecision": "1"}

# QuantizeLinear/DequantizeLinear take ``axis`` (one scale per channel) from opset 13 on; opsets
# 10-12 have per-tensor scales only, so a per-channel QDQ model at those opsets is invalid ONNX.
PER_CHANNEL_MIN_OPSET = 13


def _onnx_opset(model: Model) -> int:
    """The model's default-domain (ai.onnx) opset."""
    opsets = model.ir.opset_imports
    return int(opsets.get("", opsets.get("ai.onnx", PER_CHANNEL_MIN_OPSET)))


def _per_channel_opset(float_model: Model) -> tuple[Model, bool, str]:
    """Make per-channel QDQ possible for a model below opset 13: ``(model, per_channel, step note)``.

    Decision: the model is upgraded to opset 13 with ``onnx.version_converter`` (per-channel scales
    keep the small channels; see the module docstring) and used only when the conversion verifiably
    happened (the converted model declares opset 13 and passes ``onnx.checker``). When it did not
    (an op the converter cannot upgrade, a model past protobuf's 2 GB), the weights are quantized
    per tensor instead, which opsets 10-12 can express, and the step says so. Either way the
    candidate is judged against the original float model by the accuracy gate, so a conversion
    that changed an answer is caught like any other quantization error.
    """
    from onnx import version_converter

    before = _onnx_opset(float_model)
    try:
        ir.external_data.load_to_model(float_model.ir)
        converted = version_converter.convert_version(ir.to_proto(float_model.ir), PER_CHANNEL_MIN_OPSET)
        versions = {o.version for o in converted.opset_import if o.domain in ("", "ai.onnx")}
        if versions != {PER_CHANNEL_MIN_OPSET}:
            raise ValueError(f"the converted model declares opset {sorted(versions)}")
        onnx.checker.check_model(converted)
    except Exception as exc:  # noqa: BLE001 - the converter raises C++ errors of many kinds
        logger.warning(
            "%s is at opset %d, below the %d that per-channel INT8 needs, and could not be converted "
            "(%s: %s); its weights are quantized per tensor",
            float_model.name,
            before,
            PER_CHANNEL_MIN_OPSET,
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
        return float_model, False, f", per-tensor weights (opset {before} has no per-channel axis)"
    logger.info(
        "%s: opset %d -> %d for per-channel INT8 weights", float_model.name, before, PER_CHANNEL_MIN_OPSET
    )
    upgraded = float_model.with_graph(
        ir.from_proto(converted), f"convert opset {before} -> {PER_CHANNEL_MIN_OPSET}"
    )
    return upgraded, True, f", per-channel after opset {before} -> {PER_CHANNEL_MIN_OPSET}"


# Dynamic INT8 quantizes MatMul, Gemm and Gather (embedding tables), never the fused Attention node:
# as QAttention its packed projection gets one weight scale per tensor and minilm's embedding
# cosine drops to 0.965 (transformer.py splits the projection out into a MatMul instead). The
# INT8 embedding table costs minilm 0.0005 of cosine and no speed, and shrinks it 59 MB -> 23 MB.
DYNAMIC_OP_TYPES = ("MatMul", "Gemm", "Gather")


# Ops that only a quantized model holds (QDQ, QOperator and dynamic formats).
QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "ConvInteger",
        "MatMulInteger",
        "DynamicQuantizeMatMul",
        "DynamicQuantizeLSTM",
        "QGemm",
        "QAttention",
    }
)


def quantized_node_count(model: Model) -> int:
    """How many nodes of ``model`` (bodies included) compute or produce INT8."""
    return sum(
        1 for node in ir.traversal.RecursiveGraphIterator(model.ir.graph) if node.op_type in QUANTIZED_OPS
    )


def dynamic_op_types(model: Model) -> tuple[str, ...]:
    """What dynamic INT8 quantizes in ``model``: MatMul/Gemm/Gather, plus LSTM where there is one
    (DynamicQuantizeLSTM), plus Conv (ConvInteger) when Conv exists only inside If/Loop/Scan bodies,
    where static INT8 cannot reach it; a main-graph Conv is static INT8's."""
    ops = graph_op_types(model)
    extra: tuple[str, ...] = ("LSTM",) if "LSTM" in ops else ()
    if "Conv" in ops and "Conv" not in {node.op_type for node in model.ir.graph}:
        extra += ("Conv",)
    return DYNAMIC_OP_TYPES + extra


def dynamic_int8(
    float_model: Model,
    *,
    per_channel: bool = True,
    exclude: list[str] | tuple[str, ...] = (),
    op_types: tuple[str, ...] = DYNAMIC_OP_TYPES,
    weight_type: WeightType = "s8",
) -> Model:
    """Dynamic INT8 (weights quantized offline, activations at run time) of ``op_types`` nodes.

    ``weight_type`` s8 takes onnxruntime's fastest CPU path (u8 activations x s8 weights); u8 is
    slower on CPUs without VNNI but keeps more precision (no int16 saturation in the u8s8 kernel).

    ``op_types`` nodes inside If/Loop/Scan bodies are quantized too (onnxruntime's
    ``EnableSubgraph``, dynamic mode only: e.g. the two branches of a merged decoder); ``exclude``
    names reach into bodies as well. Should onnxruntime fail on the bodies, they stay float with a
    warning and the main graph is quantized alone.
    """
    from onnxruntime import quantization as q

    checked_choice(weight_type, WEIGHT_TYPES, "weight type")
    in_bodies = subgraph_nodes(float_model, op_types)
    with tempfile.TemporaryDirectory(prefix="hone-quant-") as folder:
        source = _save(float_model, Path(folder) / "float.onnx")
        if in_bodies:
            _lift_body_constants(source)
        target = Path(folder) / "int8.onnx"

        def run(enable_subgraph: bool) -> None:
            q.quantize_dynamic(
                str(source),
                str(target),
                per_channel=per_channel,
                weight_type=q.QuantType.QInt8 if weight_type == "s8" else q.QuantType.QUInt8,
                op_types_to_quantize=list(op_types),
                # the dynamic quantizer first turns Gemm G into MatMul G_MatMul + Add G_Add, then excludes
                nodes_to_exclude=[*exclude, *(f"{name}_MatMul" for name in exclude)],
                use_external_data_format=_is_large(float_model),
                extra_options={"EnableSubgraph": enable_subgraph},
            )

        body_step = f", {len(in_bodies)} If/Loop/Scan body nodes quantized too" if in_bodies else ""
        try:
            try:
                run(enable_subgraph=bool(in_bodies))
            except Exception as exc:
                if not in_bodies:
                    raise
                logger.warning(
                    "onnxruntime could not quantize the If/Loop/Scan bodies of %s (%s: %s); their %d "
                    "node(s) stay float",
                    float_model.name,
                    type(exc).__name__,
                    exc,
                    len(in_bodies),
                )
                body_step = f", {len(in_bodies)} If/Loop/Scan body nodes kept float"
                run(enable_subgraph=False)
        except Exception as exc:
            raise QuantizationError(
                f"onnxruntime could not quantize {float_model.name} dynamically: {type(exc).__name__}: {exc}"
            ) from exc
        return _load(
            float_model,
            target,
            f"quantize dynamic int8 ({weight_type} weights)"
            + body_step
            + (f", {len(exclude)} nodes kept float" if exclude else ""),
        )


def fp16(
    float_model: Model,
    *,
    keep_io_types: bool = True,
    keep_float: tuple[str, ...] = FP16_KEEP_FLOAT,
    exclude: list[str] | tuple[str, ...] = (),
) -> Model:
    """Float16 weights and arithmetic; inputs/outputs stay float32 when ``keep_io_types``."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    ir.external_data.load_to_model(float_model.ir)
    proto = ir.to_proto(float_model.ir)
    try:
        converted = convert_float_to_float16(
            proto,
            keep_io_types=keep_io_types,
            op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(keep_float)),
            node_block_list=list(exclude),
        )
    except Exception as exc:
        raise QuantizationError(
            f"fp16 conversion of {float_model.name} failed: {type(exc).__name__}: {exc}"
        ) from exc
    converted_model = float_model.with_graph(ir.from_proto(converted), "convert fp16")
    if keep_io_types:
        return converted_model
    return _with_graph_io_dtypes(converted_model)


def _with_graph_io_dtypes(model: Model) -> Model:
    """The Model's input/output specs retyped to what its graph now declares (fp16 inputs)."""
    inputs = {v.name: v.dtype for v in model.ir.graph.inputs if v.dtype is not None}
    outputs = {v.name: v.dtype for v in model.ir.graph.outputs if v.dtype is not None}
    return dataclasses.replace(
        model,
        inputs=tuple(
            dataclasses.replace(s, dtype=str(np.dtype(inputs[s.name].numpy()))) if s.name in inputs else s
            for s in model.inputs
        ),
        outputs=tuple(
            dataclasses.replace(s, dtype=str(np.dtype(outputs[s.name].numpy()))) if s.name in outputs else s
            for s in model.outputs
        ),
    )


def graph_op_types(model: Model) -> set[str]:
    """Op types of every node of the model's graph, the bodies of If/Loop/Scan (at any depth) included.

    Model-local functions are not entered: onnxruntime's quantizers see their call nodes only."""
    return {node.op_type for node in ir.traversal.RecursiveGraphIterator(model.ir.graph)}


def subgraph_nodes(
    model: Model, op_types: tuple[str, ...] = ("Conv", "MatMul", "Gemm", "Gather")
) -> list[str]:
    """Names (or ``<op_type> in <body>`` when unnamed) of ``op_types`` nodes inside If/Loop/Scan bodies."""
    top = {id(node) for node in model.ir.graph}
    return [
        node.name or f"{node.op_type} in {node.graph.name if node.graph is not None else 'a body'}"
        for node in ir.traversal.RecursiveGraphIterator(model.ir.graph)
        if id(node) not in top
        and node.op_type in op_types
        and (node.op_type != "Gather" or _float_table(node))
    ]


def quantizable_nodes(
    model: Model, op_types: tuple[str, ...] = ("Conv", "MatMul", "Gemm", "Gather")
) -> list[str]:
    """Names of the main graph's nodes the quantizer turns into INT8 kernels (the candidates to keep float).

    Nodes inside If/Loop/Scan bodies are not listed (``subgraph_nodes`` lists them): static INT8
    keeps them float anyway (onnxruntime calibrates the main graph only), and dynamic INT8, which
    does quantize them, cannot have them ranked by the per-layer fallback, whose comparison exposes
    main-graph values only; such a body is judged as a whole by the accuracy gate.

    onnxruntime keeps nodes float by name only, so an unnamed one (ONNX text, some exporters) is
    named here, in place, ``<op_type>_<index>``: call this on the float model the candidates are
    built from, before building the ones that exclude nodes."""
    taken = {node.name for node in model.ir.graph if node.name}
    names = []
    for index, node in enumerate(model.ir.graph):
        if node.op_type not in op_types or (node.op_type == "Gather" and not _float_table(node)):
            continue
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
        names.append(node.name)
    return names


def _float_table(gather: ir.Node) -> bool:
    """A Gather the quantizer turns INT8: its data is a float initializer (an embedding table)."""
    table = gather.inputs[0].const_value if gather.inputs and gather.inputs[0] is not None else None
    return table is not None and table.dtype == ir.DataType.FLOAT


def size_bytes(model: Model) -> int:
    """Bytes of the model as saved (graph and weights)."""
    with tempfile.TemporaryDirectory(prefix="hone-size-") as folder:
        path = _save(model, Path(folder) / "model.onnx")
        return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file()) if path.exists() else 0


def _lift_body_constants(path: Path) -> None:
    """Constant nodes inside If/Loop/Scan bodies become initializers of their body: onnxruntime's
    quantizer reads weights only from initializers (exporters such as spox and torch write a body's
    weights as Constant nodes). Done on the saved copy; the model the caller holds is unchanged."""
    from onnx_ir.passes.common import LiftConstantsToInitializersPass

    copy = ir.load(path)
    modified = LiftConstantsToInitializersPass(lift_all_constants=False)(copy).modified
    modified = _move_initializers_into_bodies(copy) or modified
    if modified:
        ir.save(copy, path)


def _move_initializers_into_bodies(model: ir.Model) -> bool:
    """Main-graph initializers read only inside one If/Loop/Scan body move into that body (hone's
    own passes lift body constants to the main graph; onnxruntime's quantizer looks in the body)."""
    main = model.graph
    moved = False
    for name, value in list(main.initializers.items()):
        users = {id(node.graph): node.graph for node, _ in value.uses() if node.graph is not None}
        if len(users) != 1 or value.is_graph_output():
            continue
        (body,) = users.values()
        if body is main or not isinstance(body, ir.Graph):
            continue
        main.initializers.pop(name)
        body.register_initializer(value)
        moved = True
    return moved


def _save(model: Model, path: Path) -> Path:
    ir.external_data.load_to_model(model.ir)
    if _is_large(model):
        return model.save(path, force=True)
    onnx.save(ir.to_proto(model.ir), path)
    return path


def _is_large(model: Model) -> bool:
    total = sum(
        v.const_value.nbytes for v in model.ir.graph.initializers.values() if v.const_value is not None
    )
    return total > 1_800_000_000  # protobuf's 2 GB limit, with room for the graph


def _load(float_model: Model, path: Path, step: str) -> Model:
    quantized = ir.load(path)
    ir.external_data.load_to_model(quantized)  # the folder goes away with this function
    return float_model.with_graph(quantized, step)
