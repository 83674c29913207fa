"""Transformer fusions for onnxruntime targets: spelled-out LayerNormalization, GELU, bias+GELU,
Add+LayerNormalization, attention -> SkipLayerNormalization, Gelu/BiasGelu, MultiHeadAttention,
Attention (com.microsoft contrib ops).

onnxscript's ``ort_fusions.optimize_for_ort`` does the rewrites; hone reports how many of each
it matched and which expected patterns it did not (e.g. Softmax still present with no attention
fused). Only for ort-cpu/ort-cuda: the output uses contrib ops that other runtimes lack.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter import ort_fusions

from hone.passes.base import HonePass, node_count


class FuseTransformerPass(HonePass):
    name = "fuse_transformer"
    targets = ("ort-cpu", "ort-cuda")

    def rewrite(self, model: ir.Model) -> ir.passes.PassResult:
        before = node_count(model)
        fused, counts = ort_fusions.optimize_for_ort(model)
        assert fused is model, "optimize_for_ort rewrites in place"
        self.matched = sum(counts.values())
        self.missed = _missed(model)
        return ir.passes.PassResult(model, modified=node_count(model) != before or self.matched > 0)


def _missed(model: ir.Model) -> list[str]:
    ops = [node.op_type for node in model.graph]
    missed = []
    attention = {"Attention", "MultiHeadAttention", "GroupQueryAttention"}
    if "Softmax" in ops and not attention & set(ops):
        missed.append(f"attention: {ops.count('Softmax')} Softmax left, no Attention/MultiHeadAttention fused")
    if "Erf" in ops:
        missed.append(f"gelu: {ops.count('Erf')} Erf left unfused")
    if "ReduceMean" in ops and "Sqrt" in ops:
        missed.append(f"layer_norm: {ops.count('ReduceMean')} ReduceMean left with Sqrt")
    return missed
