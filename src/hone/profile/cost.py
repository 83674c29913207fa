"""Per-operator cost model: multiply-accumulates, operations and minimum bytes of every node.

``model_cost(model, batch=, dims=)`` fixes the model's input shapes (the batch dim takes ``batch``,
named dims take ``dims``; for a hone Model through ``hone.data.resolve_shape`` with the model's
``default_dims`` under ``dims``), infers every value's shape with onnxruntime's symbolic shape
inference (it knows the com.microsoft contrib ops; onnx's ``infer_shapes(data_prop=True)`` is the
fallback), and costs each node of the main graph from those shapes. It never runs the model.

A caller that did run it (``hone.profile``) passes what the run saw: ``input_shapes``, the shapes
it fed (they replace the resolved ones), and ``run_shapes``, the type and shape of values as the
run produced them, which take precedence over inference. ``ModelCost.unknown_values`` lists the
node outputs inference left without a concrete shape: the ones worth asking a run for (a Reshape
to a shape computed from data, the output of an If whose branches differ, a custom op).

Notation: ``numel(T)`` is the element count of tensor ``T``; ``X`` is a node's first input, ``Y``
its first output; ``T = 4`` is the cost of one transcendental function (exp, log, erf, tanh,
sigmoid, sin, pow, ...); ``S_L = 6`` is scale + softmax per attention score.

Bytes (the minimum traffic, a roofline's memory side)
    bytes_read     = sum over the node's distinct inputs of numel * item size, each read once,
                     initializers included (item size in bits / 8: 4-bit types take half a byte,
                     rounded up per tensor; strings count 0 with a note), except
                     - Shape and Size read only metadata: 0 bytes;
                     - Gather, GatherElements, GatherND and Slice read only the elements they
                       output from their data input: min(bytes(data), numel(Y) * item size), and
                       EmbedLayerNormalization likewise from each embedding table;
    bytes_written  = sum over outputs of numel * item size;
    weight_bytes   = the part of bytes_read from initializers and Constant outputs.
    Reshape, Flatten, Squeeze, Unsqueeze, Identity and Dropout are views (no copy) in onnxruntime;
    they still count read + write, the minimum a copying runtime needs.

MACs (flops = 2 * MACs + the extras listed; integer MACs for the quantized forms)
    Conv, ConvInteger, QLinearConv, FusedConv   W = (Cout, Cin/groups, k1..kd)
        MACs = numel(Y) * (Cin/groups) * prod(k) = N * Cout * Hout*Wout(*Dout) * (Cin/groups) * prod(k)
        where shape inference gives, per spatial axis (strides s, dilations d, pads p0 p1),
        out = floor((in + p0 + p1 - d*(k-1) - 1) / s) + 1 (auto_pad SAME_*: ceil(in / s));
        extras: + numel(Y) for a bias; FusedConv + numel(Y) activation (+ numel(Y) for its sum
        input Z); QLinearConv + 2 * numel(Y) requantization.
    ConvTranspose                               W = (Cin, Cout/groups, k1..kd)
        MACs = numel(X) * (Cout/groups) * prod(k) = N * Cin * H_in*W_in(*D_in) * (Cout/groups) * prod(k);
        + numel(Y) for a bias.
    MatMul, MatMulInteger, QLinearMatMul, FusedMatMul, MatMulIntegerToFloat, DynamicQuantizeMatMul
        A = (..., M, K), B = (..., K, N) (a 1-D A is (1, K), a 1-D B is (K, 1)):
        MACs = prod(broadcast(batch dims of A, batch dims of B)) * M * K * N;
        extras: QLinearMatMul + 2 * numel(Y) requantization; MatMulIntegerToFloat + numel(Y)
        scaling; DynamicQuantizeMatMul + 5 * numel(A) quantizing A + numel(Y) scaling; both
        + numel(Y) for a bias.
    MatMulNBits (com.microsoft, attributes K, N)  MACs = numel(A) / K * K * N = numel(A) * N;
        + 2 * K * N dequantizing the packed weight, + numel(Y) for a bias.
    Gemm, FusedGemm, QGemm    A = (M, K) ((K, M) with transA), B = (K, N) ((N, K) with transB):
        MACs = M * K * N; + M * N for the bias C (alpha/beta folded in); FusedGemm + M * N
        activation; QGemm + 2 * M * N requantization when it has an output scale.
    Attention (com.microsoft)   input (B, S, H_in), weights (H_in, Hq + Hk + Hv) (qkv_hidden_sizes,
        else three equal parts), num_heads heads, L = past length + S:
        MACs = B*S*H_in*(Hq+Hk+Hv)  (QKV projection)  +  B*S*L*Hk  (Q K^T)  +  B*S*L*Hv  (A V);
        + B*S*(Hq+Hk+Hv) for the bias, + S_L * B*heads*S*L.
    MultiHeadAttention (com.microsoft)   projected query (B, S, D) (or packed (B, S, heads, 3, h)),
        key/value (B, L, D) or (B, heads, L, h) (or packed KV), L from present_key when given:
        MACs = B*S*L*D + B*S*L*Dv; + S_L * B*heads*S*L, + numel of the bias broadcast over Q, K, V.
    GroupQueryAttention (com.microsoft)   query (B, S, D) (or packed with K and V),
        L = total sequence length (present_key, else past + S); counted without the causal mask:
        MACs = 2 * B*S*L*D; + S_L * B*num_heads*S*L.
    Attention (ai.onnx, opset 23)   Q (B, qN, S, h) or (B, S, qN*h), K/V with kv heads, L from K
        (plus past): MACs = B*qN*S*L*h + B*qN*S*L*h_v; + S_L * B*qN*S*L.

Per output element (flops = c * numel(Y))
    1   Add Sub Mul Div Max Min (n inputs: n-1) Sum (n-1) Mean (n) Neg Abs Sign Floor Ceil Round
        Reciprocal Sqrt Relu Mod BitShift Cast CastLike Where Not And Or Xor Equal Greater Less
        GreaterOrEqual LessOrEqual IsNaN IsInf BiasAdd (2: bias and skip)
    2   Clip LeakyRelu PRelu ThresholdedRelu Shrink DequantizeLinear (subtract zero point, scale)
    3   HardSigmoid (mul, add, clamp) Softsign QuantizeLinear (scale, round, add zero point/saturate)
    4   HardSwish; T for Exp Log Erf Tanh Sigmoid Sin Cos Tan Asin Acos Atan Sinh Cosh Asinh Acosh
        Atanh Pow
    T+2 = 6   Elu Selu Celu QuickGelu (x * sigmoid(a x))
    T+4 = 8   Gelu (0.5 x (1 + erf(x / sqrt 2))), contrib Gelu; Gelu(approximate=tanh) as FastGelu
    T+5 = 9   BiasGelu (bias add + Gelu); Softplus = log(1 + exp x) as 2T + 1
    T+8 = 12  FastGelu (0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))), + 1 with its bias
    2T+6 = 14 Mish
    QLinearAdd QLinearMul 8 (dequantize both 2+2, op 1, quantize 3); QLinearLeakyRelu 7;
    QLinearSigmoid 2 + T + 3 = 9
    DynamicQuantizeLinear 5 per element (min and max 2, quantize 3)
    Resize / Upsample: nearest 1, linear 4, cubic 16 (taps of the interpolation)

Per input element (flops = c * numel(X), + c_out * numel(Y))
    ReduceSum ReduceMax ReduceMin ReduceProd ArgMax ArgMin GlobalMaxPool CumSum   1
    ReduceMean GlobalAveragePool QLinearGlobalAveragePool    1, + 1 per output (divide)
    ReduceL1 ReduceSumSquare   2;   ReduceL2 GlobalLpPool   2, + 1 per output (sqrt)
    ReduceLogSum   1, + T per output;   ReduceLogSumExp   T + 1, + T per output
    Softmax LogSoftmax   5 (max, subtract, exp, sum, divide: the usual count, exp as one
        operation of a vectorized kernel);  BiasSoftmax 6
    BatchNormalization   2 (inference: folded into one scale and one shift per channel;
        training mode is not modelled)
    LayerNormalization InstanceNormalization GroupNormalization   8 (mean, subtract, square,
        sum, rsqrt scale, gamma, beta, + about 1 for the per-row work spread over the row)
    SimplifiedLayerNormalization (RMSNorm: no mean, no beta)   6
    SkipLayerNormalization / SkipSimplifiedLayerNormalization   8 / 6, + 1 for the skip add,
        + 1 more with a bias input
    EmbedLayerNormalization   per output element: 8 + one add per extra embedding (position,
        segment); the gathers themselves are data movement
    MeanVarianceNormalization 6; LpNormalization 3
    MaxPool AveragePool QLinearAveragePool   numel(Y) * prod(kernel_shape);  LpPool twice that

Data movement (flops 0, bytes counted, known)
    Reshape Flatten Squeeze Unsqueeze Transpose Concat Split Slice Gather GatherElements GatherND
    ScatterND ScatterElements Expand Tile Pad Identity Shape Size Constant ConstantOfShape Range
    Dropout MemcpyToHost MemcpyFromHost DepthToSpace SpaceToDepth Trilu OneHot EyeLike
    ReverseSequence QLinearConcat

Anything else, a custom domain, a model-local function, or a node holding subgraphs (If, Loop,
Scan): ``known=False`` with macs/flops 0, a note saying why, and a count in ``unknown_ops``. A
covered op whose needed shapes could not be inferred is reported the same way ("shape unknown
for input 'x'"), so a zero is never silent.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper

from hone.data import resolve_shape
from hone.specs import TensorSpec

if TYPE_CHECKING:
    from hone.model import Model

logger = logging.getLogger(__name__)

# One transcendental function evaluation (exp, log, erf, tanh, sigmoid, ...), in flops.
TRANSCENDENTAL_FLOPS = 4
# Per attention score: the 1/sqrt(head_size) scale plus Softmax's five.
SCORE_FLOPS = 6
# Initializers with more elements than this are handed to shape inference as typed inputs
# instead of values: the values of big weights never decide a shape, and copying them costs.
_INLINE_INITIALIZER_MAX_ELEMENTS = 1024
# Domains whose ops the handlers below know (ai.onnx and onnxruntime's contrib ops).
_COSTED_DOMAINS = ("", "ai.onnx", "com.microsoft")

# How every value got its shape: onnxruntime's symbolic inference, onnx's, the symbolic one with
# onnx's filling what it left unknown, or neither (declared shapes only).
ShapeInference = Literal["onnxruntime-symbolic", "onnx", "onnxruntime-symbolic+onnx", "none"]
# A ShapeInference, with "+run" when a run of the model gave shapes that inference had not.
ShapeSource = Literal[
    ShapeInference,
    "onnxruntime-symbolic+run",
    "onnx+run",
    "onnxruntime-symbolic+onnx+run",
    "none+run",
]
_WITH_RUN: dict[ShapeInference, ShapeSource] = {
    "onnxruntime-symbolic": "onnxruntime-symbolic+run",
    "onnx": "onnx+run",
    "onnxruntime-symbolic+onnx": "onnxruntime-symbolic+onnx+run",
    "none": "none+run",
}


@dataclass
class NodeCost:
    """The work one node does and the minimum bytes it moves, at the model's concrete shapes."""

    name: str
    op_type: str
    domain: str  # "" for ai.onnx, "com.microsoft", ...
    macs: int  # multiply-accumulates (Conv/MatMul/Gemm/attention); 0 where the op has none
    flops: int  # 2 * macs for the MAC-based ops plus elementwise work (integer ops when quantized)
    bytes_read: int  # every input read once, initializers included (see the module docstring)
    bytes_written: int  # every output written once
    weight_bytes: int  # the part of bytes_read from initializers and Constant outputs
    known: bool  # False when the op (or a shape it needs) is not covered: macs/flops are then 0
    note: str = ""

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def arithmetic_intensity(self) -> float | None:
        """Flops per byte moved; None when the node moves no bytes."""
        return self.flops / self.bytes if self.bytes else None


@dataclass
class ModelCost:
    """Cost of every node of a model's main graph at one batch size and set of dims."""

    nodes: list[NodeCost]
    batch: int
    dims: dict[str, int]
    total_macs: int
    total_flops: int
    total_bytes: int
    unknown_ops: dict[str, int]  # op_type -> count of nodes whose cost is not known
    shape_inference: ShapeSource
    # Main-graph node outputs without a concrete shape after inference (and run_shapes), in graph order.
    unknown_values: list[str] = field(default_factory=list)

    @property
    def total_weight_bytes(self) -> int:
        return sum(node.weight_bytes for node in self.nodes)


# A value's (onnx.TensorProto element type, concrete shape), as a run of the model produced it.
RunShape = tuple[int, tuple[int, ...]]


def model_cost(
    model: Model | onnx.ModelProto | ir.Model,
    *,
    batch: int = 1,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    run_shapes: Mapping[str, RunShape] | None = None,
) -> ModelCost:
    """Cost every node of ``model``'s main graph with inputs at ``batch`` and ``dims``.

    ``input_shapes`` (input name -> shape a run was fed) replace the shapes ``batch`` and ``dims``
    resolve to; ``run_shapes`` (value name -> element type and shape a run produced) replace
    inferred ones, so values inference cannot follow are costed too."""
    from hone.model import Model

    if batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch}")
    given_dims = dict(dims or {})
    if isinstance(model, Model):
        proto = ir.to_proto(model.ir)
        specs = model.inputs
        given_dims = {**model.default_dims, **given_dims}
    elif isinstance(model, ir.Model):
        proto = ir.to_proto(model)
        specs = None
    else:
        proto = model
        specs = None
    graph = proto.graph
    constants = _constant_names(graph)
    if specs is None:
        specs = tuple(_spec_from_value_info(vi, given_dims) for vi in graph.input if vi.name not in constants)
    shapes, used_dims = _concrete_shapes(specs, batch, given_dims, input_shapes or {})

    slim = _shape_inference_input(proto, shapes, constants)
    inferred, inference = _infer_shapes(slim)
    tensors = _tensor_table(inferred, proto)
    filled = _apply_run_shapes(tensors, run_shapes or {}, constants)
    method: ShapeSource = _WITH_RUN[inference] if filled else inference
    if filled:
        logger.info("shapes of %d values from a run of the model", filled)

    nodes = [_cost_node(node, index, tensors, constants) for index, node in enumerate(graph.node)]
    unknown = Counter(node.op_type for node in nodes if not node.known)
    if unknown:
        logger.info("no cost for %d nodes: %s", sum(unknown.values()), dict(unknown))
    unknown_values = [
        name
        for node in graph.node
        for name in node.output
        if name and (tensors.get(name) is None or tensors[name].numel is None)
    ]
    return ModelCost(
        nodes=nodes,
        batch=batch,
        dims=used_dims,
        total_macs=sum(node.macs for node in nodes),
        total_flops=sum(node.flops for node in nodes),
        total_bytes=sum(node.bytes for node in nodes),
        unknown_ops=dict(unknown),
        shape_inference=method,
        unknown_values=list(dict.fromkeys(unknown_values)),
    )


# ---------------------------------------------------------------------------------------------
# Shapes: concrete inputs, shape inference, and a table of every value's type and shape.


@dataclass(frozen=True)
class _TensorInfo:
    elem_type: int
    shape: tuple[int | None, ...] | None  # None: rank unknown; None in a dim: that dim unknown

    @property
    def dims(self) -> tuple[int, ...] | None:
        """The shape when every dim is known, else None."""
        if self.shape is None:
            return None
        known = tuple(d for d in self.shape if d is not None)
        return known if len(known) == len(self.shape) else None

    @property
    def numel(self) -> int | None:
        dims = self.dims
        return None if dims is None else math.prod(dims)

    @property
    def bits(self) -> int | None:
        return _ELEMENT_BITS.get(self.elem_type)

    @property
    def nbytes(self) -> int | None:
        numel, bits = self.numel, self.bits
        if numel is None or bits is None:
            return None
        return (numel * bits + 7) // 8


def _element_bits() -> dict[int, int]:
    bits_by_name = {
        "FLOAT": 32, "UINT8": 8, "INT8": 8, "UINT16": 16, "INT16": 16, "INT32": 32, "INT64": 64,
        "BOOL": 8, "FLOAT16": 16, "DOUBLE": 64, "UINT32": 32, "UINT64": 64, "COMPLEX64": 64,
        "COMPLEX128": 128, "BFLOAT16": 16, "FLOAT8E4M3FN": 8, "FLOAT8E4M3FNUZ": 8,
        "FLOAT8E5M2": 8, "FLOAT8E5M2FNUZ": 8, "FLOAT8E8M0": 8, "UINT4": 4, "INT4": 4,
        "FLOAT4E2M1": 4, "FLOAT6E2M3": 6, "FLOAT6E3M2": 6, "UINT2": 2, "INT2": 2,
    }  # fmt: skip
    # Types this onnx does not define are simply absent; STRING has no fixed size.
    return {getattr(onnx.TensorProto, n): b for n, b in bits_by_name.items() if hasattr(onnx.TensorProto, n)}


_ELEMENT_BITS = _element_bits()


def _constant_names(graph: onnx.GraphProto) -> set[str]:
    names = {t.name for t in graph.initializer}
    names |= {t.values.name for t in graph.sparse_initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            names.update(node.output)
    return names


def _spec_from_value_info(value: onnx.ValueInfoProto, given_dims: Mapping[str, int]) -> TensorSpec:
    """The spec of a bare ONNX input: its first symbolic dim, unless named in ``given_dims``, is
    the batch dim wherever it sits."""
    dims: list[int | str | None] = []
    for dim in value.type.tensor_type.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(dim.dim_value)
        else:
            dims.append(dim.dim_param or None)
    first_symbolic = next((i for i, d in enumerate(dims) if not isinstance(d, int)), None)
    if first_symbolic is not None and dims[first_symbolic] not in given_dims:
        dims[first_symbolic] = "batch"
    return TensorSpec(name=value.name, dtype="", shape=tuple(dims))


def _concrete_shapes(
    specs: tuple[TensorSpec, ...],
    batch: int,
    given_dims: dict[str, int],
    fed: Mapping[str, Sequence[int]],
) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    """Each input's concrete shape (as ``fed`` to a run, else resolved), and the value every named
    non-batch dim took."""
    shapes: dict[str, tuple[int, ...]] = {}
    used: dict[str, int] = {}
    for spec in specs:
        given = fed.get(spec.name)
        if given is not None and len(given) == len(spec.shape):
            shape = tuple(int(d) for d in given)
        else:
            shape = resolve_shape(spec, batch=batch, dims=given_dims)
        shapes[spec.name] = shape
        for axis, dim in enumerate(spec.shape):
            takes_batch = dim not in given_dims and (axis == 0 or dim == "batch")
            if isinstance(dim, str) and not takes_batch:
                used[dim] = shape[axis]
    return shapes, used


def _shape_inference_input(
    proto: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], constants: set[str]
) -> onnx.ModelProto:
    """A copy of ``proto`` for shape inference: concrete inputs, no stale shapes, no big weights."""
    source = proto.graph
    slim = onnx.ModelProto()
    slim.ir_version = proto.ir_version
    slim.opset_import.extend(proto.opset_import)
    slim.functions.extend(proto.functions)
    graph = slim.graph
    graph.name = source.name
    graph.node.extend(source.node)
    declared_inputs = {vi.name for vi in source.input}
    for value in source.input:
        copy = graph.input.add()
        copy.CopyFrom(value)
        if value.name in shapes and value.name not in constants:
            copy.type.tensor_type.shape.Clear()
            for size in shapes[value.name]:
                copy.type.tensor_type.shape.dim.add().dim_value = size
    for tensor in source.initializer:
        external = tensor.data_location == onnx.TensorProto.EXTERNAL
        if math.prod(tensor.dims) <= _INLINE_INITIALIZER_MAX_ELEMENTS and not external:
            graph.initializer.append(tensor)
        elif tensor.name not in declared_inputs:
            typed = helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
            graph.input.append(typed)
    graph.sparse_initializer.extend(source.sparse_initializer)
    for value in source.output:
        copy = graph.output.add()
        copy.name = value.name
        if value.type.HasField("tensor_type"):
            copy.type.tensor_type.elem_type = value.type.tensor_type.elem_type
        else:
            copy.type.CopyFrom(value.type)
    return slim


def _infer_shapes(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, ShapeInference]:
    """Shapes from onnxruntime's symbolic inference (contrib ops), else from onnx's."""
    try:
        inferred, complete = _symbolic_infer(proto)
    except Exception as exc:  # noqa: BLE001 - the symbolic engine raises many types on graphs it cannot follow
        logger.warning("onnxruntime symbolic shape inference failed (%s); using onnx shape inference", exc)
    else:
        if complete:
            logger.info("shapes from onnxruntime symbolic shape inference")
            return inferred, "onnxruntime-symbolic"
        logger.info("onnxruntime symbolic shape inference left some values unknown; adding onnx's")
        try:
            fallback = onnx.shape_inference.infer_shapes(proto, data_prop=True)
        except Exception as exc:  # noqa: BLE001 - partial symbolic shapes are still useful
            logger.warning("onnx shape inference failed too (%s)", exc)
            return inferred, "onnxruntime-symbolic"
        _fill_unknown_from(inferred, fallback)
        return inferred, "onnxruntime-symbolic+onnx"
    try:
        return onnx.shape_inference.infer_shapes(proto, data_prop=True), "onnx"
    except Exception as exc:  # noqa: BLE001 - without shapes every node says so
        logger.warning("onnx shape inference failed (%s); costing from declared shapes only", exc)
        return proto, "none"


def _symbolic_infer(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """``SymbolicShapeInference.infer_shapes(proto, auto_merge=True)``, keeping partial results.

    The public entry point saves ``sym_shape_infer_temp.onnx`` into the working directory and
    raises when any value stays unknown; driving the engine's own loop keeps what it found.
    """
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    engine = SymbolicShapeInference(int_max=2**31 - 1, auto_merge=True, guess_output_rank=False, verbose=0)
    engine._preprocess(proto)
    complete = False
    while engine.run_:
        complete = engine._infer_impl()
    engine._update_output_from_vi()
    return engine.out_mp_, bool(complete)


def _fill_unknown_from(target: onnx.ModelProto, source: onnx.ModelProto) -> None:
    known = {vi.name for vi in _value_infos(target.graph) if _read_value_info(vi).numel is not None}
    for vi in source.graph.value_info:
        if vi.name not in known and _read_value_info(vi).numel is not None:
            target.graph.value_info.append(vi)


def _value_infos(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    return [*graph.input, *graph.value_info, *graph.output]


def _read_value_info(value: onnx.ValueInfoProto) -> _TensorInfo:
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return _TensorInfo(tensor_type.elem_type, None)
    dims = tuple(d.dim_value if d.WhichOneof("value") == "dim_value" else None for d in tensor_type.shape.dim)
    return _TensorInfo(tensor_type.elem_type, dims)


def _tensor_table(inferred: onnx.ModelProto, original: onnx.ModelProto) -> dict[str, _TensorInfo]:
    """Type and shape of every value: initializers, Constant outputs, then inferred ones, then
    fully concrete shapes the exporter declared for values inference could not follow."""
    table: dict[str, _TensorInfo] = {}
    for tensor in original.graph.initializer:
        table[tensor.name] = _TensorInfo(tensor.data_type, tuple(tensor.dims))
    for sparse in original.graph.sparse_initializer:
        table[sparse.values.name] = _TensorInfo(sparse.values.data_type, tuple(sparse.dims))
    for node in original.graph.node:
        if node.op_type != "Constant" or not node.attribute:
            continue
        if node.attribute[0].type == onnx.AttributeProto.TENSOR:
            tensor = node.attribute[0].t
            table[node.output[0]] = _TensorInfo(tensor.data_type, tuple(tensor.dims))
    for value in _value_infos(inferred.graph):
        if not value.type.HasField("tensor_type"):
            continue
        info = _read_value_info(value)
        previous = table.get(value.name)
        if previous is None or (previous.numel is None and info.numel is not None):
            table[value.name] = info
    for value in original.graph.value_info:
        info = _read_value_info(value)
        previous = table.get(value.name)
        if info.numel is not None and (previous is None or previous.numel is None):
            table[value.name] = info
    return table


def _apply_run_shapes(
    tensors: dict[str, _TensorInfo], run_shapes: Mapping[str, RunShape], constants: set[str]
) -> int:
    """Put the shapes a run produced into ``tensors`` (they are the truth at those inputs); how many
    values that gave a concrete shape inference had not."""
    filled = 0
    for name, (elem_type, shape) in run_shapes.items():
        if name in constants:
            continue
        previous = tensors.get(name)
        if previous is None or previous.numel is None:
            filled += 1
        tensors[name] = _TensorInfo(int(elem_type), tuple(int(d) for d in shape))
    return filled


# ---------------------------------------------------------------------------------------------
# Per-node costing.


class _ShapeUnknown(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@dataclass(frozen=True)
class _Work:
    macs: int = 0
    flops: int = 0


@dataclass
class _NodeView:
    node: onnx.NodeProto
    tensors: dict[str, _TensorInfo]

    def present(self, index: int) -> bool:
        return index < len(self.node.input) and self.node.input[index] != ""

    def output_present(self, index: int) -> bool:
        return index < len(self.node.output) and self.node.output[index] != ""

    def in_shape(self, index: int) -> tuple[int, ...]:
        return self._shape(self.node.input[index] if self.present(index) else "", "input")

    def out_shape(self, index: int = 0) -> tuple[int, ...]:
        return self._shape(self.node.output[index] if self.output_present(index) else "", "output")

    def in_numel(self, index: int = 0) -> int:
        return math.prod(self.in_shape(index))

    def out_numel(self, index: int = 0) -> int:
        return math.prod(self.out_shape(index))

    def attr(self, name: str, default: object = None) -> object:
        for attribute in self.node.attribute:
            if attribute.name == name:
                value = helper.get_attribute_value(attribute)
                return value.decode() if isinstance(value, bytes) else value
        return default

    def int_attr(self, name: str, default: int | None = None) -> int:
        """An integer attribute, ``default`` when absent; with no default, an absent one makes the
        cost unknown."""
        value = self.attr(name, default)
        if not isinstance(value, int | float):
            raise _ShapeUnknown(f"attribute {name!r}")
        return int(value)

    def ints_attr(self, name: str) -> list[int]:
        """An integer-list attribute, empty when absent."""
        value = self.attr(name)
        return [int(item) for item in value] if isinstance(value, list) else []

    def _shape(self, name: str, role: str) -> tuple[int, ...]:
        info = self.tensors.get(name) if name else None
        dims = info.dims if info is not None else None
        if dims is None:
            raise _ShapeUnknown(f"{role} {name!r}")
        return dims


_Handler = Callable[[_NodeView], _Work]


def _cost_node(
    node: onnx.NodeProto, index: int, tensors: dict[str, _TensorInfo], constants: set[str]
) -> NodeCost:
    view = _NodeView(node, tensors)
    name = node.name or f"{node.op_type}_{index}"
    domain = "" if node.domain == "ai.onnx" else node.domain
    bytes_read, bytes_written, weight_bytes, notes = _node_bytes(view, constants)
    known = True
    work = _Work()
    handler = _HANDLERS.get(node.op_type) if domain in _COSTED_DOMAINS else None
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        known = False
        notes.insert(0, f"holds subgraphs ({node.op_type}); their nodes are not costed")
    elif handler is None:
        known = False
        notes.insert(0, "unknown op" if domain in _COSTED_DOMAINS else f"unknown op (domain {domain!r})")
    else:
        try:
            work = handler(view)
        except _ShapeUnknown as missing:
            known = False
            notes.insert(0, f"shape unknown for {missing.what}")
    return NodeCost(
        name=name,
        op_type=node.op_type,
        domain=domain,
        macs=int(work.macs),
        flops=int(work.flops),
        bytes_read=bytes_read,
        bytes_written=bytes_written,
        weight_bytes=weight_bytes,
        known=known,
        note="; ".join(dict.fromkeys(notes)),
    )


# Ops whose data input (index 0) is read only where they output from it.
_GATHER_LIKE = frozenset({"Gather", "GatherElements", "GatherND", "Slice"})
_METADATA_ONLY = frozenset({"Shape", "Size"})
_EMBEDDING_TABLES = (2, 3, 4)  # word, position, segment tables of EmbedLayerNormalization


def _node_bytes(view: _NodeView, constants: set[str]) -> tuple[int, int, int, list[str]]:
    node = view.node
    bytes_read = bytes_written = weight_bytes = 0
    unknown_inputs: list[str] = []
    unknown_outputs: list[str] = []
    seen: set[str] = set()
    for index, name in enumerate(node.input):
        if not name or name in seen or node.op_type in _METADATA_ONLY:
            continue
        seen.add(name)
        info = view.tensors.get(name)
        size = info.nbytes if info is not None else None
        if size is None:
            unknown_inputs.append(name)
            continue
        if _reads_only_output_elements(node.op_type, index) and info is not None:
            try:
                size = min(size, (view.out_numel(0) * (info.bits or 0) + 7) // 8)
            except _ShapeUnknown:
                pass  # the whole input, an upper bound
        bytes_read += size
        if name in constants:
            weight_bytes += size
    for name in node.output:
        if not name:
            continue
        info = view.tensors.get(name)
        size = info.nbytes if info is not None else None
        if size is None:
            unknown_outputs.append(name)
        else:
            bytes_written += size
    notes = []
    for role, names in (("input", unknown_inputs), ("output", unknown_outputs)):
        if names:
            listed = ", ".join(repr(n) for n in names)
            notes.append(f"shape unknown for {role} {listed} (0 bytes counted)")
    return bytes_read, bytes_written, weight_bytes, notes


def _reads_only_output_elements(op_type: str, index: int) -> bool:
    if op_type in _GATHER_LIKE:
        return index == 0
    return op_type == "EmbedLayerNormalization" and index in _EMBEDDING_TABLES


# --- MAC-based ops ----------------------------------------------------------------------------


def _conv_work(
    w: int, *, bias: int | None, per_output_extra: int = 0, sum_input: int | None = None
) -> _Handler:
    def handler(view: _NodeView) -> _Work:
        weight = view.in_shape(w)
        outputs = view.out_numel(0)
        macs = outputs * math.prod(weight[1:])  # (Cin/groups) * prod(kernel) per output element
        extra = per_output_extra * outputs
        if bias is not None and view.present(bias):
            extra += outputs
        if sum_input is not None and view.present(sum_input):
            extra += outputs
        return _Work(macs, 2 * macs + extra)

    return handler


def _conv_transpose(view: _NodeView) -> _Work:
    weight = view.in_shape(1)
    macs = view.in_numel(0) * math.prod(weight[1:])  # (Cout/groups) * prod(kernel) per input element
    extra = view.out_numel(0) if view.present(2) else 0
    return _Work(macs, 2 * macs + extra)


def _matmul_macs(a: tuple[int, ...], b: tuple[int, ...], trans_a: bool = False, trans_b: bool = False) -> int:
    a2 = (1, a[0]) if len(a) == 1 else a
    b2 = (b[0], 1) if len(b) == 1 else b
    m, k = (a2[-1], a2[-2]) if trans_a else (a2[-2], a2[-1])
    n = b2[-2] if trans_b else b2[-1]
    batch = math.prod(np.broadcast_shapes(tuple(a2[:-2]), tuple(b2[:-2])))
    return int(batch) * m * k * n


def _matmul_work(
    a: int,
    b: int,
    *,
    per_output_extra: int = 0,
    bias: int | None = None,
    per_a_extra: int = 0,
    transposes: bool = False,
) -> _Handler:
    def handler(view: _NodeView) -> _Work:
        trans_a = transposes and bool(view.attr("transA", 0))
        trans_b = transposes and bool(view.attr("transB", 0))
        macs = _matmul_macs(view.in_shape(a), view.in_shape(b), trans_a, trans_b)
        extra = 0
        if per_output_extra or (bias is not None and view.present(bias)):
            outputs = view.out_numel(0)
            extra += per_output_extra * outputs
            if bias is not None and view.present(bias):
                extra += outputs
        if per_a_extra:
            extra += per_a_extra * view.in_numel(a)
        return _Work(macs, 2 * macs + extra)

    return handler


def _matmul_nbits(view: _NodeView) -> _Work:
    k = view.int_attr("K")
    n = view.int_attr("N")
    macs = view.in_numel(0) * n
    extra = 2 * k * n + (view.out_numel(0) if view.present(5) else 0)
    return _Work(macs, 2 * macs + extra)


def _gemm_work(
    a: int, b: int, c: int, *, per_output_extra: int = 0, requantize_if: int | None = None
) -> _Handler:
    def handler(view: _NodeView) -> _Work:
        a_shape, b_shape = view.in_shape(a), view.in_shape(b)
        m, k = (a_shape[1], a_shape[0]) if view.attr("transA", 0) else (a_shape[0], a_shape[1])
        n = b_shape[0] if view.attr("transB", 0) else b_shape[1]
        macs = m * k * n
        extra = per_output_extra * m * n
        if view.present(c):
            extra += m * n
        if requantize_if is not None and view.present(requantize_if):
            extra += 2 * m * n
        return _Work(macs, 2 * macs + extra)

    return handler


# --- attention --------------------------------------------------------------------------------


def _contrib_attention(view: _NodeView) -> _Work:
    batch, seq, hidden_in = view.in_shape(0)
    total = view.in_shape(1)[1]
    sizes = view.ints_attr("qkv_hidden_sizes")
    if sizes:
        _, hidden_k, hidden_v = sizes
    else:
        hidden_k = hidden_v = total // 3
    heads = view.int_attr("num_heads", 1)
    past = view.in_shape(4)[3] if view.present(4) else 0
    kv_len = past + seq
    macs = batch * seq * hidden_in * total + batch * seq * kv_len * hidden_k + batch * seq * kv_len * hidden_v
    extra = SCORE_FLOPS * batch * heads * seq * kv_len
    if view.present(2):
        extra += batch * seq * total
    return _Work(macs, 2 * macs + extra)


def _multi_head_attention(view: _NodeView) -> _Work:
    heads = view.int_attr("num_heads", 1)
    query = view.in_shape(0)
    batch, seq = query[0], query[1]
    if len(query) == 5:  # packed QKV (B, S, heads, 3, head_size)
        hidden = query[2] * query[4]
        kv_len, hidden_v = seq, hidden
    else:
        hidden = query[2]
        key = view.in_shape(1)
        if len(key) == 5:  # packed KV (B, L, heads, 2, head_size)
            kv_len, hidden_v = key[1], key[2] * key[4]
        else:
            kv_len = key[2] if len(key) == 4 else key[1]
            if view.present(2):
                value = view.in_shape(2)
                hidden_v = value[1] * value[3] if len(value) == 4 else value[2]
            else:
                hidden_v = hidden
    if view.output_present(1):
        kv_len = view.out_shape(1)[2]  # present_key (B, heads, past + L, head_size)
    elif view.present(6):
        kv_len += view.in_shape(6)[2]
    macs = batch * seq * kv_len * hidden + batch * seq * kv_len * hidden_v
    extra = SCORE_FLOPS * batch * heads * seq * kv_len
    if view.present(3):
        extra += batch * seq * hidden + 2 * batch * kv_len * hidden  # bias on Q, K and V
    return _Work(macs, 2 * macs + extra)


def _group_query_attention(view: _NodeView) -> _Work:
    heads = view.int_attr("num_heads", 1)
    kv_heads = view.int_attr("kv_num_heads", heads)
    batch, seq, width = view.in_shape(0)
    hidden = width if view.present(1) else width // (heads + 2 * kv_heads) * heads
    if view.output_present(1):
        kv_len = view.out_shape(1)[2]
    elif view.present(3):
        kv_len = view.in_shape(3)[2] + seq
    else:
        kv_len = seq
    macs = 2 * batch * seq * kv_len * hidden
    return _Work(macs, 2 * macs + SCORE_FLOPS * batch * heads * seq * kv_len)


def _onnx_attention(view: _NodeView) -> _Work:
    query = view.in_shape(0)
    key = view.in_shape(1)
    value = view.in_shape(2)
    if len(query) == 4:
        batch, q_heads, seq, head = query
    else:
        q_heads = view.int_attr("q_num_heads", 1)
        batch, seq, head = query[0], query[1], query[2] // q_heads
    if len(key) == 4:
        kv_len = key[2]
        head_v = value[3]
    else:
        kv_heads = view.int_attr("kv_num_heads", 1)
        kv_len = key[1]
        head_v = value[2] // kv_heads
    if view.output_present(1):
        kv_len = view.out_shape(1)[2]
    elif view.present(4):
        kv_len += view.in_shape(4)[2]
    macs = batch * q_heads * seq * kv_len * (head + head_v)
    return _Work(macs, 2 * macs + SCORE_FLOPS * batch * q_heads * seq * kv_len)


# --- elementwise, reductions, normalizations, pooling -----------------------------------------


def _per_output(flops_per_element: int) -> _Handler:
    def handler(view: _NodeView) -> _Work:
        return _Work(0, flops_per_element * view.out_numel(0))

    return handler


def _variadic(extra_per_input: int) -> _Handler:
    """Max/Min/Sum (n-1 per element) and Mean (n per element) over n inputs."""

    def handler(view: _NodeView) -> _Work:
        count = sum(1 for name in view.node.input if name)
        return _Work(0, max(1, count - 1 + extra_per_input) * view.out_numel(0))

    return handler


def _per_input(per_input: int, per_output: int = 0, input_index: int = 0) -> _Handler:
    def handler(view: _NodeView) -> _Work:
        flops = per_input * view.in_numel(input_index)
        if per_output:
            flops += per_output * view.out_numel(0)
        return _Work(0, flops)

    return handler


def _gelu(view: _NodeView) -> _Work:
    per_element = 12 if view.attr("approximate", "none") == "tanh" else TRANSCENDENTAL_FLOPS + 4
    return _Work(0, per_element * view.out_numel(0))


def _fast_gelu(view: _NodeView) -> _Work:
    per_element = TRANSCENDENTAL_FLOPS + 8 + (1 if view.present(1) else 0)
    return _Work(0, per_element * view.out_numel(0))


def _skip_norm(base: int, bias: int) -> _Handler:
    def handler(view: _NodeView) -> _Work:
        per_element = base + 1 + (1 if view.present(bias) else 0)  # skip add, bias add
        return _Work(0, per_element * view.in_numel(0))

    return handler


def _embed_layer_norm(view: _NodeView) -> _Work:
    extra_tables = 1 + (1 if view.present(1) and view.present(4) else 0)  # position, segment
    return _Work(0, (8 + extra_tables) * view.out_numel(0))


def _pool(factor: int = 1) -> _Handler:
    def handler(view: _NodeView) -> _Work:
        kernel = view.ints_attr("kernel_shape")
        if not kernel:
            raise _ShapeUnknown("attribute 'kernel_shape'")
        return _Work(0, factor * view.out_numel(0) * math.prod(kernel))

    return handler


def _resize(view: _NodeView) -> _Work:
    mode = str(view.attr("mode", "nearest"))
    per_element = {"nearest": 1, "linear": 4, "bilinear": 4, "cubic": 16}.get(mode, 4)
    return _Work(0, per_element * view.out_numel(0))


def _data_movement(view: _NodeView) -> _Work:
    return _Work()


def _handlers() -> dict[str, _Handler]:
    transcendental = TRANSCENDENTAL_FLOPS
    table: dict[str, _Handler] = {}
    for op in (
        "Add Sub Mul Div Neg Abs Sign Floor Ceil Round Reciprocal Sqrt Relu Mod BitShift Cast CastLike "
        "Where Not And Or Xor Equal Greater Less GreaterOrEqual LessOrEqual IsNaN IsInf"
    ).split():
        table[op] = _per_output(1)
    table["BiasAdd"] = _per_output(2)
    for op in ("Max", "Min", "Sum"):
        table[op] = _variadic(0)
    table["Mean"] = _variadic(1)
    for op in "Clip LeakyRelu PRelu ThresholdedRelu Shrink DequantizeLinear".split():
        table[op] = _per_output(2)
    for op in "HardSigmoid Softsign QuantizeLinear".split():
        table[op] = _per_output(3)
    table["HardSwish"] = _per_output(4)
    for op in "Exp Log Erf Tanh Sigmoid Sin Cos Tan Asin Acos Atan Sinh Cosh Asinh Acosh Atanh Pow".split():
        table[op] = _per_output(transcendental)
    for op in "Elu Selu Celu QuickGelu".split():
        table[op] = _per_output(transcendental + 2)
    table["Gelu"] = _gelu
    table["BiasGelu"] = _per_output(transcendental + 5)
    table["Softplus"] = _per_output(2 * transcendental + 1)
    table["FastGelu"] = _fast_gelu
    table["Mish"] = _per_output(2 * transcendental + 6)
    table["QLinearAdd"] = table["QLinearMul"] = _per_output(8)
    table["QLinearLeakyRelu"] = _per_output(7)
    table["QLinearSigmoid"] = _per_output(5 + transcendental)
    table["DynamicQuantizeLinear"] = _per_input(5)
    table["Resize"] = table["Upsample"] = _resize

    for op in "ReduceSum ReduceMax ReduceMin ReduceProd ArgMax ArgMin GlobalMaxPool CumSum".split():
        table[op] = _per_input(1)
    for op in "ReduceMean GlobalAveragePool QLinearGlobalAveragePool".split():
        table[op] = _per_input(1, 1)
    table["ReduceL1"] = table["ReduceSumSquare"] = _per_input(2)
    table["ReduceL2"] = table["GlobalLpPool"] = _per_input(2, 1)
    table["ReduceLogSum"] = _per_input(1, transcendental)
    table["ReduceLogSumExp"] = _per_input(transcendental + 1, transcendental)
    table["Softmax"] = table["LogSoftmax"] = _per_input(5)
    table["BiasSoftmax"] = _per_input(6)
    table["BatchNormalization"] = _per_input(2)
    for op in "LayerNormalization InstanceNormalization GroupNormalization".split():
        table[op] = _per_input(8)
    table["SimplifiedLayerNormalization"] = _per_input(6)
    table["SkipLayerNormalization"] = _skip_norm(8, bias=4)
    table["SkipSimplifiedLayerNormalization"] = _skip_norm(6, bias=3)
    table["EmbedLayerNormalization"] = _embed_layer_norm
    table["MeanVarianceNormalization"] = _per_input(6)
    table["LpNormalization"] = _per_input(3)
    table["MaxPool"] = table["AveragePool"] = table["QLinearAveragePool"] = _pool()
    table["LpPool"] = _pool(2)

    table["Conv"] = _conv_work(1, bias=2)
    table["ConvInteger"] = _conv_work(1, bias=None)
    table["QLinearConv"] = _conv_work(3, bias=8, per_output_extra=2)
    table["FusedConv"] = _conv_work(1, bias=2, per_output_extra=1, sum_input=3)
    table["ConvTranspose"] = _conv_transpose
    table["MatMul"] = _matmul_work(0, 1)
    table["MatMulInteger"] = _matmul_work(0, 1)
    table["QLinearMatMul"] = _matmul_work(0, 3, per_output_extra=2)
    table["FusedMatMul"] = _matmul_work(0, 1, transposes=True)
    table["MatMulIntegerToFloat"] = _matmul_work(0, 1, per_output_extra=1, bias=6)
    table["DynamicQuantizeMatMul"] = _matmul_work(0, 1, per_output_extra=1, bias=4, per_a_extra=5)
    table["MatMulNBits"] = _matmul_nbits
    table["Gemm"] = _gemm_work(0, 1, 2)
    table["FusedGemm"] = _gemm_work(0, 1, 2, per_output_extra=1)
    table["QGemm"] = _gemm_work(0, 3, 6, requantize_if=7)
    table["Attention"] = _attention_dispatch
    table["MultiHeadAttention"] = _multi_head_attention
    table["GroupQueryAttention"] = _group_query_attention

    for op in (
        "Reshape Flatten Squeeze Unsqueeze Transpose Concat Split Slice Gather GatherElements GatherND "
        "ScatterND ScatterElements Expand Tile Pad Identity Shape Size Constant ConstantOfShape Range "
        "Dropout MemcpyToHost MemcpyFromHost DepthToSpace SpaceToDepth Trilu OneHot EyeLike "
        "ReverseSequence QLinearConcat"
    ).split():
        table[op] = _data_movement
    return table


def _attention_dispatch(view: _NodeView) -> _Work:
    """``Attention`` is two ops: com.microsoft's (with its QKV projection) and ai.onnx's (opset 23)."""
    if view.node.domain == "com.microsoft":
        return _contrib_attention(view)
    return _onnx_attention(view)


_HANDLERS = _handlers()
