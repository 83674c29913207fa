"""Constant folding: a node whose inputs are all constant -> an initializer holding its output.

onnxscript's folder (``fold_constants_ir``) does the work. Capped so that Tile/Expand/
ConstantOfShape and friends are not unrolled into huge initializers: a node is folded only when
its inputs hold at most ``INPUT_SIZE_LIMIT`` elements and its output at most
``OUTPUT_SIZE_LIMIT``. Leaves alone: nodes with a non-constant input, random ops, larger outputs.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.optimizer import fold_constants_ir

from hone.passes.base import HonePass, node_count

INPUT_SIZE_LIMIT = 1 << 20
OUTPUT_SIZE_LIMIT = 1 << 20


class FoldConstantsPass(HonePass):
    name = "fold_constants"

    def rewrite(self, model: ir.Model) -> ir.passes.PassResult:
        before = node_count(model)
        result = fold_constants_ir(
            model, input_size_limit=INPUT_SIZE_LIMIT, output_size_limit=OUTPUT_SIZE_LIMIT
        )
        # Folded nodes stay until dead-code elimination; clean them up here so counts are honest.
        ir.passes.common.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified=bool(result.modified) or node_count(model) != before)
