"""Prepare a fused transformer graph for dynamic INT8: every projection a plain MatMul, activations smoothed.

Two rewrites, both exact in float (the gate still judges the quantized result):

1. ``split_attention_projections``: a com.microsoft ``Attention`` node holds its packed QKV weight
   inside itself, so the quantizer can only turn it into ``QAttention``, whose weight scale is
   one per tensor: on minilm that costs the embedding cosine 0.97. Here each Attention becomes
   ``MatMul(x, W_qkv) -> Split -> MultiHeadAttention(q, k, v, bias)``: the projection is an
   ordinary MatMul that gets per-channel weight scales like every other MatMul. (onnxruntime's
   CPU MultiHeadAttention has no packed-QKV input, hence the Split.)
2. ``smooth_activations`` (SmoothQuant, Xiao et al. 2023): dynamic INT8 gives an activation one
   scale per tensor, so a few outlier channels (LayerNorm outputs have them) crush the precision
   of the rest. For ``Y = X @ W`` with constant W, per input channel c:
   ``s_c = max|X_c| ** alpha / max|W_c| ** (1 - alpha)``, then ``Y = (X / s) @ (s * W)``: the
   activation's range is flattened and the difference moves into W, whose per-channel scales
   absorb it. ``1 / s`` is folded into the producer where that is exact (the value columns of
   the attention projection before MultiHeadAttention), else it is one small Mul node.
   Measured on minilm (benchmarks/quantize.py): cosine mean 0.993 -> 0.996 with every MatMul in
   INT8. Written here because onnxruntime's SmoothQuant option needs Intel Neural Compressor and
   applies to static quantization only.

The activation ranges come from calibration batches (``calibration.py``).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from hone.model import Model
from hone.quantize.sensitivity import run_exposing

logger = logging.getLogger(__name__)

MS_DOMAIN = "com.microsoft"
SMOOTH_ALPHA = 0.8  # share of the outlier range moved into the weights (0.7-0.85 measured best on minilm)
_TINY = 1e-5


def split_attention_projections(model: Model) -> tuple[Model, int]:
    """Each com.microsoft Attention with constant packed weights -> MatMul, Split, MultiHeadAttention."""
    copied = ir.from_proto(ir.to_proto(model.ir))
    graph = copied.graph
    count = 0
    for node in [n for n in graph if n.op_type == "Attention" and n.domain == MS_DOMAIN]:
        if not _splittable(node):
            continue
        x, weight, bias = node.inputs[:3]
        hidden = weight.const_value.shape[1] // 3
        sizes = _initializer(graph, np.array([hidden] * 3, dtype=np.int64), f"{node.name}_qkv_sizes")
        matmul = ir.node("MatMul", [x, weight], name=f"{node.name}_qkv_matmul")
        split = ir.node(
            "Split",
            [matmul.outputs[0], sizes],
            attributes={"axis": -1},
            num_outputs=3,
            name=f"{node.name}_qkv_split",
        )
        attention_bias = node.inputs[5] if len(node.inputs) > 5 else None
        inputs = [*split.outputs, bias] + ([None, attention_bias] if attention_bias is not None else [])
        attention = ir.node(
            "MultiHeadAttention",
            inputs,
            domain=MS_DOMAIN,
            name=f"{node.name}_mha",
            attributes={
                "num_heads": node.attributes["num_heads"].as_int(),
                "scale": node.attributes["scale"].as_float(),
            }
            if "scale" in node.attributes
            else {"num_heads": node.attributes["num_heads"].as_int()},
        )
        ir.convenience.replace_nodes_and_values(
            graph, node, [node], [matmul, split, attention], [node.outputs[0]], [attention.outputs[0]]
        )
        count += 1
    if not count:
        return model, 0
    return model.with_graph(copied, f"split {count} attention projections into MatMuls"), count


def _splittable(node: ir.Node) -> bool:
    """Packed QKV (3 equal parts) with constant 2-D weight and 1-D bias, no mask_index, no past state."""
    inputs = list(node.inputs)
    if len(inputs) < 3 or any(v is None for v in inputs[:3]) or len(node.outputs) != 1:
        return False
    if any(v is not None for i, v in enumerate(inputs) if i in (3, 4) or i > 5):
        return False  # mask_index / past / others: MultiHeadAttention spells them differently
    if set(node.attributes) - {"num_heads", "scale"}:
        return False  # qkv_hidden_sizes, unidirectional, ...: left as they are
    weight_value, bias_value = inputs[1], inputs[2]
    if weight_value is None or bias_value is None:
        return False
    weight, bias = weight_value.const_value, bias_value.const_value
    return (
        weight is not None
        and bias is not None
        and len(weight.shape) == 2
        and len(bias.shape) == 1
        and isinstance(weight.shape[1], int)
        and weight.shape[1] % 3 == 0
        and bias.shape[0] == weight.shape[1]
    )


def prepare_for_dynamic_int8(
    model: Model, feeds: list[dict[str, np.ndarray]], *, threads: int | None = None
) -> tuple[Model, list[str]]:
    """Both rewrites in turn (``split_attention_projections``, then ``smooth_activations`` on the
    calibration batches ``feeds``); returns the model and a note for each rewrite that changed it."""
    model, split = split_attention_projections(model)
    model, smoothed = smooth_activations(model, feeds, threads=threads)
    notes = []
    if split:
        notes.append(f"split {split} fused attention projection(s) into MatMuls for per-channel INT8")
    if smoothed:
        notes.append(
            f"smoothed {smoothed} MatMul input(s) (SmoothQuant, alpha {SMOOTH_ALPHA:g}) on the "
            "calibration data"
        )
    return model, notes


def smooth_activations(
    model: Model,
    feeds: list[dict[str, np.ndarray]],
    *,
    alpha: float = SMOOTH_ALPHA,
    threads: int | None = None,
) -> tuple[Model, int]:
    """SmoothQuant every MatMul with a constant 2-D weight; ranges measured on ``feeds``."""
    copied = ir.from_proto(ir.to_proto(model.ir))
    graph = copied.graph
    matmuls = [n for n in graph if n.op_type == "MatMul" and _const_matrix(n.inputs[1]) is not None]
    if not matmuls or not feeds:
        return model, 0
    ranges = _channel_ranges(model, matmuls, feeds, threads)
    count = 0
    for node in matmuls:
        weight = _const_matrix(node.inputs[1])
        assert weight is not None
        activation_max = ranges.get(node.inputs[0].name)
        if (
            activation_max is None
            or activation_max.shape[0] != weight.shape[0]
            or len(node.inputs[1].uses()) != 1
        ):
            continue
        weight_max = np.maximum(np.abs(weight).max(axis=1), _TINY)
        scales = (np.maximum(activation_max, _TINY) ** alpha / weight_max ** (1.0 - alpha)).astype(np.float32)
        if not _fold_into_value_projection(node, scales):
            label = node.name or node.outputs[0].name
            divide = ir.node(
                "Mul",
                [node.inputs[0], _initializer(graph, 1.0 / scales, f"{label}_smooth_inv")],
                name=f"{label}_smooth",
            )
            graph.insert_before(node, divide)
            node.replace_input_with(0, divide.outputs[0])
        node.inputs[1].const_value = ir.tensor(weight * scales[:, None], name=node.inputs[1].name)
        count += 1
    if not count:
        return model, 0
    return model.with_graph(copied, f"smooth {count} MatMul inputs (alpha {alpha:g})"), count


def _channel_ranges(
    model: Model, matmuls: list[ir.Node], feeds: list[dict[str, np.ndarray]], threads: int | None
) -> dict[str, np.ndarray]:
    """max |x| per last-axis channel of each MatMul input, over all calibration batches."""
    widths: dict[str, int] = {}
    for node in matmuls:
        source, weight = node.inputs[0], _const_matrix(node.inputs[1])
        if source is not None and source.name is not None and weight is not None:
            widths[source.name] = weight.shape[0]
    values = run_exposing(model, sorted(widths), feeds, threads)
    return {
        name: np.max([np.abs(batch.reshape(-1, widths[name])).max(axis=0) for batch in values[name]], axis=0)
        for name in widths
        if all(batch.shape[-1:] == (widths[name],) for batch in values[name])
    }


def _fold_into_value_projection(node: ir.Node, scales: np.ndarray) -> bool:
    """Divide the value columns of the attention projection by ``scales`` instead of adding a Mul.

    MultiHeadAttention's output channel c is a weighted sum of value channel c, so scaling V's
    channel c (its weight column and bias) scales output channel c exactly; a NaN guard
    (IsNaN -> Where(nan, 0, x)) in between keeps zeros zero.
    """
    source = node.inputs[0]
    if source is None:
        return False
    producer = source.producer()
    if producer is not None and producer.op_type == "Where" and len(source.uses()) == 1:
        source = producer.inputs[2]
        if source is None:
            return False
        producer = source.producer()
    if producer is None or producer.op_type != "MultiHeadAttention" or producer.domain != MS_DOMAIN:
        return False
    if len(source.uses()) > 2 or len(producer.inputs) < 4 or producer.inputs[3] is None:
        return False  # besides this MatMul only the guard's IsNaN may read it
    split = producer.inputs[2].producer() if producer.inputs[2] is not None else None
    if split is None or split.op_type != "Split" or split.outputs[2] is not producer.inputs[2]:
        return False
    packed = split.inputs[0]
    projection = packed.producer() if packed is not None else None
    bias_value = producer.inputs[3]
    if projection is None or projection.op_type != "MatMul" or bias_value.const_value is None:
        return False
    weight_value = projection.inputs[1]
    weight = _const_matrix(weight_value)
    if weight is None or weight_value is None or len(weight_value.uses()) != 1 or len(bias_value.uses()) != 1:
        return False
    hidden = weight.shape[1] // 3
    if hidden != scales.shape[0]:
        return False
    weight, bias = weight.copy(), bias_value.const_value.numpy().copy()
    weight[:, 2 * hidden :] /= scales[None, :]
    bias[2 * hidden :] /= scales
    weight_value.const_value = ir.tensor(weight, name=weight_value.name)
    bias_value.const_value = ir.tensor(bias, name=bias_value.name)
    return True


def _const_matrix(value: ir.Value | None) -> np.ndarray | None:
    if value is None or value.const_value is None:
        return None
    array = value.const_value.numpy()
    return array if array.ndim == 2 and array.dtype == np.float32 else None


def _initializer(graph: ir.Graph, array: np.ndarray, name: str) -> ir.Value:
    value = ir.Value(name=name, const_value=ir.tensor(array.astype(array.dtype), name=name))
    value.shape, value.dtype = ir.Shape(array.shape), ir.DataType.from_numpy(array.dtype)
    graph.initializers.add(value)
    return value
