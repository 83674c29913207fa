"""MatMul + Add -> Gemm (also with a Transpose on either input folded into transA/transB).

onnxscript's ``matmul_add_to_gemm`` rules: only for 2-D operands with a bias that broadcasts
to (M, N), where Gemm is exactly equivalent. Leaves alone: batched (3-D+) MatMuls, which are
reported as missed only when their bias Add could have been fused by a 2-D reshape.
"""

from __future__ import annotations

from onnxscript.rewriter.rules import common as rules

from hone.passes.base import RewriteRulesPass


class FuseMatMulAddPass(RewriteRulesPass):
    name = "fuse_matmul_add"
    rules = (
        rules.matmul_add_to_gemm_rule,
        rules.transpose_a_matmul_add_to_gemm_rule,
        rules.transpose_b_matmul_add_to_gemm_rule,
        rules.transpose_ab_matmul_add_to_gemm_rule,
    )
