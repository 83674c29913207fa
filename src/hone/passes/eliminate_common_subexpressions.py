"""Common-subexpression elimination: two nodes with the same op, attributes and inputs -> one.

onnx-ir's CommonSubexpressionEliminationPass does the work. Leaves alone: nodes with subgraphs
and non-deterministic ops (RandomNormal, ...), which are never merged.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import CommonSubexpressionEliminationPass

from hone.passes.base import HonePass
from hone.passes.graph import node_count


class EliminateCommonSubexpressionsPass(HonePass):
    name = "eliminate_common_subexpressions"

    def rewrite(self, model: ir.Model) -> ir.passes.PassResult:
        before = node_count(model)
        CommonSubexpressionEliminationPass()(model)
        ir.passes.common.RemoveUnusedNodesPass()(model)
        self.matched = before - node_count(model)
        return ir.passes.PassResult(model, modified=self.matched > 0)
