"""No-op removal: Identity, inference Dropout, x+0, x-0, x*1, x/1, Cast to the same type, Expand
and Transpose that change nothing -> their input.

onnxscript's no-op rules for Dropout, Cast, Expand and Transpose, hone's own for the arithmetic
(below), then hone's Identity elimination (``graph.eliminate_identities``, which keeps graph outputs
named and distinct). Leaves alone: Dropout in training mode or whose mask is used (a graph output
included), ops whose no-op-ness depends on unknown shapes.

Why x+0, x-0, x*1, x/1 are hone's: onnxscript 0.7's ``add_0_rule`` & co. match their constant with
``abs_tol=1e-8``, so the epsilon of ``log(x*x + 1e-10)`` (basic-pitch's normalized log) counts as 0
and is removed, turning silence into -inf. hone's rules take a constant that is exactly 0 (or 1),
one element, and of a rank no higher than x's (so broadcasting cannot grow the result).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import RewriteRule
from onnxscript.rewriter.rules import common as rules

from hone.passes.base import RewriteRulesPass
from hone.passes.graph import is_onnx_op


def _add(op, x, c):
    return op.Add(x, c)


def _sub(op, x, c):
    return op.Sub(x, c)


def _mul(op, x, c):
    return op.Mul(x, c)


def _div(op, x, c):
    return op.Div(x, c)


def _identity(op, x, **_):
    return op.Identity(x)


def _exactly(value: float):
    """A check: ``c`` is a one-element constant equal to ``value`` exactly, of rank <= x's."""

    def check(context, x: ir.Value, c: ir.Value, **_) -> bool:
        tensor = ir.convenience.get_const_tensor(c)
        if tensor is None:
            return False
        array = tensor.numpy()
        if array.size != 1 or (array.ndim > 0 and (x.shape is None or array.ndim > len(x.shape))):
            return False
        return bool(np.asarray(array).reshape(()) == value)

    return check


_EXACT_ARITHMETIC = (
    *RewriteRule(_add, _identity, _exactly(0)).commute(),
    RewriteRule(_sub, _identity, _exactly(0)),
    *RewriteRule(_mul, _identity, _exactly(1)).commute(),
    RewriteRule(_div, _identity, _exactly(1)),
)


class RemoveNoOpsPass(RewriteRulesPass):
    name = "remove_no_ops"
    rules = (
        rules.dropout_inference_rule,
        rules.dropout_zero_rule,
        *_EXACT_ARITHMETIC,
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
        self.missed = (
            [f"{left} Identity left (they name graph outputs or pass inputs through)"] if left else []
        )
        return ir.passes.PassResult(model, modified=result.modified or identities > 0 or dropouts > 0)


def _remove_inference_dropouts(model: ir.Model) -> int:
    """Dropout without a training_mode input (or with a constant false one), mask unused -> input.

    Written here because onnxscript's dropout rules only match Dropout spelled with all inputs.
    """
    graph_outputs = set(model.graph.outputs)
    removed = 0
    for node in list(model.graph):
        if not is_onnx_op(node, "Dropout"):
            continue
        training = node.inputs[2] if len(node.inputs) > 2 else None
        if training is not None and (training.const_value is None or bool(training.const_value.numpy())):
            continue
        if len(node.outputs) > 1 and (node.outputs[1].uses() or node.outputs[1].is_graph_output()):
            continue
        source, output = node.inputs[0], node.outputs[0]
        if source is None or output in graph_outputs:
            continue
        output.replace_all_uses_with(source)
        model.graph.remove(node, safe=True)
        removed += 1
    return removed
