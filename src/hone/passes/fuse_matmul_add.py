"""MatMul + Add -> Gemm (also with a Transpose on either input folded into transA/transB).

onnxscript's ``matmul_add_to_gemm`` rules: only for 2-D operands with a bias that broadcasts
to (M, N), where Gemm is exactly equivalent. Leaves alone: batched (3-D+) MatMuls, which are
reported as missed only when their bias Add could have been fused by a 2-D reshape, and biases
that would widen the result (rank above 2, or a dim larger than MatMul's).

Works around onnxscript 0.7, whose rules check only the ranks of A and B: ``MatMul(x[1, K],
w[K, N]) + b[2, N]`` or ``+ b[2, 1, N]`` became a Gemm whose C does not broadcast to (1, N) (an
invalid model). Each rule here adds that check on C (Gemm's broadcast of C is one-directional).
The Transpose rules are tried first, so that a Transpose is folded into transA/transB instead of
staying in front of a plain Gemm.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter.rules.common import _matmul_add_to_gemm as gemm_rules

from hone.passes.base import RewriteRulesPass
from hone.passes.graph import is_onnx_op


class _BiasBroadcastsToOutput(gemm_rules._MatMulAddToGemmBase):
    """Mixin for onnxscript's MatMul+Add rules: the rule also requires C to broadcast to (M, N)
    without widening it."""

    def check(self, context, input_a, input_b, input_c=None, **kwargs):
        result = super().check(context, input_a, input_b, input_c=input_c, **kwargs)
        if not result:
            return result
        reason = _bias_mismatch(input_a, input_b, input_c, trans_a=self.trans_a, trans_b=self.trans_b)
        return result.fail(reason) if reason else result


def _bias_mismatch(a: ir.Value, b: ir.Value, c: ir.Value | None, *, trans_a: bool, trans_b: bool) -> str:
    """Why ``c`` cannot be Gemm's C for ``a @ b`` (ranks of a and b already 2), or ""."""
    if c is None or c.shape is None:
        return "the bias's shape is unknown"
    if c.shape.rank() > 2:
        return f"the bias has rank {c.shape.rank()}; Gemm's C has rank 2 at most"
    if a.shape is None or b.shape is None:  # the rules matched on their ranks, so both are known
        return "the MatMul's shapes are unknown"
    rows = a.shape[1] if trans_a else a.shape[0]
    cols = b.shape[0] if trans_b else b.shape[1]
    for dim, target in zip(reversed(c.shape.dims), (cols, rows), strict=False):
        known = isinstance(dim, int) or dim.value is not None
        if dim != 1 and not (known and dim == target):
            return f"the bias of shape {c.shape} does not broadcast to the MatMul's ({rows}, {cols})"
    return ""


class _MatMulAddToGemm(_BiasBroadcastsToOutput, gemm_rules.MatMulAddToGemm):
    pass


class _TransAMatMulAddToGemm(_BiasBroadcastsToOutput, gemm_rules.TransAMatMulAddToGemm):
    pass


class _TransBMatMulAddToGemm(_BiasBroadcastsToOutput, gemm_rules.TransBMatMulAddToGemm):
    pass


class _TransABMatMulAddToGemm(_BiasBroadcastsToOutput, gemm_rules.TransABMatMulAddToGemm):
    pass


matmul_add_to_gemm_rule = _MatMulAddToGemm().rule()
transpose_a_matmul_add_to_gemm_rule = _TransAMatMulAddToGemm().rule()
transpose_b_matmul_add_to_gemm_rule = _TransBMatMulAddToGemm().rule()
transpose_ab_matmul_add_to_gemm_rule = _TransABMatMulAddToGemm().rule()


class FuseMatMulAddPass(RewriteRulesPass):
    name = "fuse_matmul_add"
    rules = (
        transpose_ab_matmul_add_to_gemm_rule,
        transpose_a_matmul_add_to_gemm_rule,
        transpose_b_matmul_add_to_gemm_rule,
        matmul_add_to_gemm_rule,
    )

    def rewrite(self, model: ir.Model) -> ir.passes.PassResult:
        result = super().rewrite(model)
        flattened = _flatten_row_biases(model)
        return ir.passes.PassResult(model, modified=result.modified or flattened > 0)


def _flatten_row_biases(model: ir.Model) -> int:
    """Gemm C of shape (1, N), a constant -> (N,): the same broadcast, and the shape onnxruntime's QDQ
    quantizer expects of a per-channel bias (with (1, N) its scale check compares whole rows and
    raises; magika's Dense layers after this pass). Returns how many were flattened."""
    flattened = 0
    for node in model.graph:
        if not is_onnx_op(node, "Gemm") or len(node.inputs) < 3:
            continue
        bias = node.inputs[2]
        if bias is None or bias.const_value is None or not bias.is_initializer():
            continue
        shape = bias.const_value.shape
        if len(shape) != 2 or shape[0] != 1:
            continue
        array = bias.const_value.numpy().reshape(-1)
        name, suffix = f"{bias.name}_row", 0
        while name in model.graph.initializers:
            suffix += 1
            name = f"{bias.name}_row_{suffix}"
        row = ir.Value(
            name=name,
            shape=ir.Shape([array.shape[0]]),
            type=bias.type,
            const_value=ir.tensor(array, name=name),
        )
        model.graph.register_initializer(row)
        node.replace_input_with(2, row)
        if not bias.uses() and not bias.is_graph_output() and bias.name is not None:
            model.graph.initializers.pop(bias.name, None)
        flattened += 1
    return flattened
