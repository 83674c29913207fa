"""BatchNormalization folding: Conv -> BatchNormalization  ->  Conv with scaled weights and bias
(also ConvTranspose and Gemm).

Maths, per output channel c: s = gamma[c] / sqrt(var[c] + eps); W'[c] = W[c] * s;
b'[c] = (b[c] - mean[c]) * s + beta[c]. onnxscript's ``fuse_batchnorm`` rules do the rewrite.
Leaves alone: BatchNormalization whose input is used elsewhere too, whose parameters are not
constant, or in training mode; those are reported as missed.

The rule names a new bias ``<weight>_bias`` and onnxscript 0.7 overwrote an initializer already
called that; RewriteRulesPass puts it back (``graph.restore_overwritten_initializers``).
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter.rules import common as rules

from hone.passes.base import RewriteRulesPass
from hone.passes.graph import producer_op


class FuseConvBnPass(RewriteRulesPass):
    name = "fuse_conv_bn"
    rules = (
        rules.fuse_batchnorm_into_conv_rule,
        rules.fuse_batchnorm_into_conv_transpose_rule,
        rules.fuse_batchnorm_into_gemm_rule,
    )

    def find_missed(self, model: ir.Model) -> list[str]:
        left = [
            node.name or "BatchNormalization"
            for node in model.graph
            if node.op_type == "BatchNormalization"
            and producer_op(node.inputs[0]) in ("Conv", "ConvTranspose", "Gemm")
        ]
        return [f"BatchNormalization after Conv/Gemm not folded: {name}" for name in left]
