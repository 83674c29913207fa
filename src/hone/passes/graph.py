"""Graph helpers the passes share: shape inference that keeps whole types, Identity elimination
that keeps graph outputs, putting back initializers a rewrite rule overwrote, and small queries.

Each works around a library's behaviour (said in its docstring); passes call these rather than
the library's own, and ``hone.passes.base`` runs them after every rule-based pass.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import _c_api_utils

logger = logging.getLogger(__name__)

# The default ONNX operator set, under both of its names.
ONNX_DOMAINS = ("", "ai.onnx")
# onnxruntime's contrib operators (FusedConv, Attention, MultiHeadAttention, ...).
MS_DOMAIN = "com.microsoft"


def is_onnx_op(node: ir.Node, *op_types: str) -> bool:
    """Whether ``node`` is one of ``op_types`` of the default ONNX domain."""
    return node.op_type in op_types and node.domain in ONNX_DOMAINS


def infer_shapes(model: ir.Model) -> bool:
    """Annotate ``model``'s values (subgraphs included) with inferred types and shapes, in place.

    onnx's shape inference with data propagation, in non-strict mode, so that ops onnx does not
    know (contrib or custom domains) leave their outputs unknown instead of failing. Returns
    whether a value's type was set or changed (new shapes alone do not count). If onnx's inference
    fails, the model is left unchanged.

    Works around onnx-ir's ``ShapeInferencePass`` (onnx-ir 1.1): its merge copies only the element
    type, so a value with no type whose inferred type is a sequence or an optional (the output of
    ``SequenceEmpty``, say) became a *tensor* of that element type, and onnxruntime then refused
    the model ("Type (tensor(float)) of output arg ... does not match expected type
    (seq(tensor(float)))"). This merges the whole type for those values.
    """

    def run_onnx(proto: onnx.ModelProto) -> onnx.ModelProto:
        return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=False, data_prop=True)

    try:
        # call_onnx_api strips large initializers first (no 2 GB protobuf limit) and restores them.
        inferred_proto = _c_api_utils.call_onnx_api(run_onnx, model)
    except Exception as exc:  # noqa: BLE001 - onnx raises several types for graphs it cannot follow
        logger.warning("shape inference failed, model left unchanged: %s", exc)
        return False
    return _merge(model, ir.serde.deserialize_model(inferred_proto))


def _merge(model: ir.Model, inferred: ir.Model) -> bool:
    retyped = False
    for graph, inferred_graph in zip(model.graphs(), inferred.graphs(), strict=False):
        inferred_values = ir.convenience.create_value_mapping(inferred_graph)
        for name, value in ir.convenience.create_value_mapping(graph).items():
            found = inferred_values.get(name)
            if found is None or found.type is None:
                continue
            if value.type is None or not isinstance(found.type, ir.TensorType):
                if value.type != found.type:
                    value.type = found.type
                    retyped = True
            elif value.dtype != found.type.dtype:
                value.dtype = found.type.dtype
                retyped = True
            if found.shape is not None and value.shape != found.shape:
                value.shape = found.shape
    return retyped


def restore_overwritten_initializers(model: ir.Model) -> int:
    """Register again each constant that a node reads but the graph no longer holds (an
    initializer a rewrite rule overwrote with its own of the same name), under a free name;
    returns how many.

    Works around onnxscript 0.7's rewriter, which stores a rule's new initializer under the name
    the rule picks even when the graph already has an initializer of that name (its "already
    exists" check is a ``continue`` of the inner loop): the old initializer leaves the graph while
    nodes still read it, and the model is invalid. The Clip/Relu rules name theirs ``<x>_min`` and
    ``<x>_max``, Reshape->Reshape ``<output>/shape``; BatchNormalization folding ``<weight>_bias``.
    """
    graph, restored = model.graph, 0
    for node in ir.traversal.RecursiveGraphIterator(graph):
        for value in node.inputs:
            if value is None or value.const_value is None or value.producer() is not None:
                continue
            if value.is_graph_input() or value.is_initializer():
                continue
            base, suffix = value.name or "initializer", 1
            name = base
            while name in graph.initializers:
                name, suffix = f"{base}_{suffix}", suffix + 1
            value.name = name
            graph.register_initializer(value)
            restored += 1
    return restored


def eliminate_identities(model: ir.Model) -> int:
    """Identity(x) -> x in the main graph; returns how many went.

    Written here instead of onnx-ir's IdentityEliminationPass, which also removes an Identity
    between two graph outputs and so merges two outputs into one. Such an Identity (and one from
    a graph input or an initializer straight to an output) is kept. When the Identity's output is
    a graph output, its input takes over the output's name.
    """
    graph, removed = model.graph, 0
    for node in list(graph):
        if not is_onnx_op(node, "Identity") or node.inputs[0] is None:
            continue
        source, output = node.inputs[0], node.outputs[0]
        if output.is_graph_output():
            if source.is_graph_output() or source.is_graph_input() or source.is_initializer():
                continue
            name = output.name
            output.replace_all_uses_with(source, replace_graph_outputs=True)
            graph.remove(node, safe=True)
            source.name = name
        else:
            output.replace_all_uses_with(source)
            graph.remove(node, safe=True)
        removed += 1
    return removed


def producer_op(value: ir.Value | None) -> str | None:
    """The op type of the node that produces ``value`` (None for inputs, initializers, None)."""
    node = value.producer() if value is not None else None
    return node.op_type if node is not None else None


def node_count(model: ir.Model) -> int:
    """Every node of ``model``, those inside subgraphs included."""
    return sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph))


def add_constant(graph: ir.Graph, array: np.ndarray, name: str) -> ir.Value:
    """``array`` as a new initializer of ``graph`` named ``name``, typed and shaped."""
    value = ir.Value(name=name, const_value=ir.tensor(array))
    value.shape, value.dtype = ir.Shape(array.shape), ir.DataType.from_numpy(array.dtype)
    graph.initializers.add(value)
    return value


def scalar_of(value: ir.Value | None) -> float | None:
    """The number a one-element constant holds, else None."""
    tensor = ir.convenience.get_const_tensor(value) if value is not None else None
    if tensor is None or tensor.size != 1:
        return None
    return float(tensor.numpy().reshape(-1)[0])


def int_attribute(node: ir.Node, name: str, default: int | None) -> int | None:
    attribute = node.attributes.get(name)
    return attribute.as_int() if attribute is not None else default


def last_static_dim(value: ir.Value) -> int | None:
    """The last dimension of ``value`` when it is a known number."""
    last = value.shape[-1] if value.shape is not None and len(value.shape) else None
    return last if isinstance(last, int) else None
