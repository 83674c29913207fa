"""No-op removal: Identity, inference Dropout, x+0, x-0, x*1, x/1, Cast to the same type, Expand
and Transpose that change nothing -> their input.

onnxscript's no-op rules, then hone's Identity elimination (``base.eliminate_identities``, which
keeps graph outputs named and distinct). Leaves alone: Dropout in training mode or whose mask is
used (a graph output included), ops whose no-op-ness depends on unknown shapes.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter.rules import common as rules

from hone.passes.base import RewriteRulesPass


class RemoveNoOpsPass(RewriteRulesPass):
    name = "remove_no_ops"
    rules = (
        rules.dropout_inference_rule,
        rules.dropout_zero_rule,
        rules.add_0_rule,
        rules.sub_0_rule,
        rules.mul_by_1_rule,
        rules.div_by_1_rule,
        rules.no_op_cast_rule,
        rules.no_op_expand_rule,
        rules.no_op_transpose_rule,
    )

    def rewrite(self, model: ir.Model) -> ir.passes.PassResult:
        dropouts = _remove_inference_dropouts(model)
        identities = sum(1 for node in model.graph if node.op_type == "Identity")
        result = super().rewrite(model)  # ends with Identity elimination
        left = sum(1 for node in model.graph if node.op_type == "Identity")
        identities -= left
        self.matched = (self.matched or 0) + max(identities, 0) + dropouts
        self.missed = [f"{left} Identity left (they name graph outputs or pass inputs through)"] if left else []
        return ir.passes.PassResult(model, modified=result.modified or identities > 0 or dropouts > 0)


def _remove_inference_dropouts(model: ir.Model) -> int:
    """Dropout without a training_mode input (or with a constant false one), mask unused -> input.

    Written here because onnxscript's dropout rules only match Dropout spelled with all inputs.
    """
    graph_outputs = set(model.graph.outputs)
    removed = 0
    for node in list(model.graph):
        if node.op_type != "Dropout" or node.domain not in ("", "ai.onnx"):
            continue
        training = node.inputs[2] if len(node.inputs) > 2 else None
        if training is not None and (training.const_value is None or bool(training.const_value.numpy())):
            continue
        if len(node.outputs) > 1 and (node.outputs[1].uses() or node.outputs[1].is_graph_output()):
            continue
        output = node.outputs[0]
        if output in graph_outputs:
            continue
        output.replace_all_uses_with(node.inputs[0])
        model.graph.remove(node, safe=True)
        removed += 1
    return removed
