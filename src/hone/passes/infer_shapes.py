"""Shape inference: unknown value shapes -> inferred shapes (symbolic dims kept symbolic).

Uses onnx-ir's ShapeInferencePass (onnx's shape inference with data propagation) in non-strict
mode, so that ops onnx does not know (contrib or custom domains) leave their outputs unknown
instead of failing the pass. Leaves alone: the graph's nodes (it only annotates values).
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

from hone.passes.base import HonePass


class InferShapesPass(HonePass):
    name = "infer_shapes"

    def rewrite(self, model: ir.Model) -> ir.passes.PassResult:
        known_before = _known_shapes(model)
        result = ShapeInferencePass(strict_mode=False)(model)
        return ir.passes.PassResult(result.model, modified=_known_shapes(result.model) > known_before)


def _known_shapes(model: ir.Model) -> int:
    return sum(1 for node in model.graph for value in node.outputs if value.shape is not None)
