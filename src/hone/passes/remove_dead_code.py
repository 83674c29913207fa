"""Dead-code elimination: nodes, initializers and opset imports nothing uses -> removed.

onnx-ir's RemoveUnusedNodesPass (nodes and initializers) and RemoveUnusedOpsetsPass. Leaves alone:
the graph's inputs and outputs (the model's contract), even when an input is unused.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass, RemoveUnusedOpsetsPass

from hone.passes.base import HonePass
from hone.passes.graph import node_count


class RemoveDeadCodePass(HonePass):
    name = "remove_dead_code"

    def rewrite(self, model: ir.Model) -> ir.passes.PassResult:
        before = (node_count(model), len(model.graph.initializers), dict(model.opset_imports))
        RemoveUnusedNodesPass()(model)
        RemoveUnusedOpsetsPass()(model)
        after = (node_count(model), len(model.graph.initializers), dict(model.opset_imports))
        self.matched = before[0] - after[0] + before[1] - after[1]
        return ir.passes.PassResult(model, modified=before != after)
