"""Shape inference: unknown value shapes -> inferred shapes (symbolic dims kept symbolic).

onnx's shape inference with data propagation, in non-strict mode, so that ops onnx does not know
(contrib or custom domains) leave their outputs unknown instead of failing the pass. Leaves
alone: the graph's nodes (it only annotates values).

``hone.passes.graph.infer_shapes`` does the work (it works around onnx-ir's
``ShapeInferencePass``, which turned sequence and optional values into tensors); passes that need
shapes should call it rather than onnx-ir's pass.
"""

from __future__ import annotations

import onnx_ir as ir

from hone.passes.base import HonePass
from hone.passes.graph import infer_shapes


class InferShapesPass(HonePass):
    name = "infer_shapes"

    def rewrite(self, model: ir.Model) -> ir.passes.PassResult:
        known_before = _known_shapes(model)
        retyped = infer_shapes(model)
        return ir.passes.PassResult(model, modified=retyped or _known_shapes(model) > known_before)


def _known_shapes(model: ir.Model) -> int:
    return sum(1 for node in model.graph for value in node.outputs if value.shape is not None)
