"""Constant nodes -> initializers: ``Constant(value=...)`` (and value_int(s)/value_float(s)) nodes
become named initializers, so they stop counting as nodes and runtimes load them like weights.

onnx-ir's LiftConstantsToInitializersPass does the work, lifting every Constant whatever its
size. Leaves alone: Constants inside subgraphs (If/Loop bodies keep theirs), string constants
that onnx-ir cannot lift.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import LiftConstantsToInitializersPass

from hone.passes.base import HonePass
from hone.passes.graph import is_onnx_op


class LiftConstantsPass(HonePass):
    name = "lift_constants"

    def rewrite(self, model: ir.Model) -> ir.passes.PassResult:
        before = sum(1 for node in model.graph if is_onnx_op(node, "Constant"))
        result = LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
        after = sum(1 for node in model.graph if is_onnx_op(node, "Constant"))
        self.matched = before - after
        self.missed = [f"{after} Constant nodes left (not liftable)"] if after else []
        return ir.passes.PassResult(model, modified=result.modified)
