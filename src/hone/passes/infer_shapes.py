"""Shape inference: unknown value shapes -> inferred shapes (symbolic dims kept symbolic).

onnx's shape inference with data propagation, in non-strict mode, so that ops onnx does not know
(contrib or custom domains) leave their outputs unknown instead of failing the pass. Leaves
alone: the graph's nodes (it only annotates values).

Works around onnx-ir's ``ShapeInferencePass`` (onnx-ir 1.1): its merge copies only the element
type, so a value with no type whose inferred type is a sequence or an optional (the output of
``SequenceEmpty``, say) became a *tensor* of that element type, and onnxruntime then refused the
model ("Type (tensor(float)) of output arg ... does not match expected type (seq(tensor(float)))").
``infer_shapes`` below merges the whole type for those values; passes that need shapes should
call it rather than onnx-ir's pass.
"""

from __future__ import annotations

import logging

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import _c_api_utils

from hone.passes.base import HonePass

logger = logging.getLogger(__name__)


class InferShapesPass(HonePass):
    name = "infer_shapes"

    def rewrite(self, model: ir.Model) -> ir.passes.PassResult:
        known_before = _known_shapes(model)
        retyped = infer_shapes(model)
        return ir.passes.PassResult(model, modified=retyped or _known_shapes(model) > known_before)


def infer_shapes(model: ir.Model) -> bool:
    """Annotate ``model``'s values (subgraphs included) with inferred types and shapes, in place.

    Returns whether a value's type was set or changed (new shapes alone do not count). If onnx's
    inference fails, the model is left unchanged.
    """

    def run_onnx(proto: onnx.ModelProto) -> onnx.ModelProto:
        return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=False, data_prop=True)

    try:
        # call_onnx_api strips large initializers first (no 2 GB protobuf limit) and restores them.
        inferred_proto = _c_api_utils.call_onnx_api(run_onnx, model)
    except Exception as exc:  # onnx raises several types for graphs it cannot follow
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
            elif value.dtype != found.dtype:
                value.dtype = found.dtype
                retyped = True
            if found.shape is not None and value.shape != found.shape:
                value.shape = found.shape
    return retyped


def _known_shapes(model: ir.Model) -> int:
    return sum(1 for node in model.graph for value in node.outputs if value.shape is not None)
