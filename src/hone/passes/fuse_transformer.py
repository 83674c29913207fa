"""Transformer fusions for onnxruntime targets: spelled-out LayerNormalization, GELU, bias+GELU,
Add+LayerNormalization, attention -> SkipLayerNormalization, Gelu/BiasGelu, MultiHeadAttention,
Attention (com.microsoft contrib ops).

onnxscript's ``ort_fusions.optimize_for_ort`` does the rewrites; hone reports how many of each
it matched and which expected patterns it did not (e.g. Softmax still present with no attention
fused). Only for ort-cpu/ort-cuda: the output uses contrib ops that other runtimes lack.
"""

from __future__ import annotations

import math

import onnx_ir as ir
from onnxscript.rewriter import ort_fusions

# not re-exported by onnxscript.rewriter (onnxscript is pinned in requirements.lock)
from onnxscript.rewriter.rules.fusion._layer_norm import layer_normalization_ruleset

from hone.passes.base import HonePass
from hone.passes.fold_constants import hide_dropouts_with_kept_masks
from hone.passes.graph import ONNX_DOMAINS, is_onnx_op, node_count, restore_overwritten_initializers

# Nodes the fusions must not see sit in this domain while they run (declared for that time).
_HIDDEN_FROM_FUSIONS_DOMAIN = "hone.hidden_from_fusions"


def _hide_low_rank_matmuls(model: ir.Model) -> list[ir.Node]:
    """MatMuls with an operand of rank < 2 (or unknown rank), moved out of the rules' sight."""
    hidden = []
    for node in model.graph:
        if is_onnx_op(node, "MatMul") and any(
            v is None or v.shape is None or len(v.shape) < 2 for v in node.inputs
        ):
            node.domain = _HIDDEN_FROM_FUSIONS_DOMAIN
            hidden.append(node)
    return hidden


_NEUTRAL = {"Add": 0.0, "Sub": 0.0, "Mul": 1.0, "Div": 1.0}


def _hide_near_neutral_arithmetic(model: ir.Model) -> list[ir.Node]:
    """Add/Sub/Mul/Div by a one-element constant that is close to 0 (or 1) without being it (the
    1e-10 of ``log(x*x + 1e-10)``): onnxscript's no-op rules, which optimize_for_ort runs, match
    their constant with ``abs_tol=1e-8, rel_tol=1e-5`` and would remove the node."""
    hidden = []
    for node in model.graph:
        neutral = _NEUTRAL.get(node.op_type)
        if neutral is None or node.domain not in ONNX_DOMAINS:
            continue
        for value in node.inputs:
            tensor = ir.convenience.get_const_tensor(value) if value is not None else None
            if tensor is None or tensor.size != 1:
                continue
            number = float(tensor.numpy().reshape(()))
            if number != neutral and math.isclose(number, neutral, rel_tol=1e-5, abs_tol=1e-8):
                node.domain = _HIDDEN_FROM_FUSIONS_DOMAIN
                hidden.append(node)
                break
    return hidden


class FuseTransformerPass(HonePass):
    name = "fuse_transformer"
    targets = ("ort-cpu", "ort-cuda")

    def rewrite(self, model: ir.Model) -> ir.passes.PassResult:
        before = node_count(model)
        # Work around onnxscript 0.7 (each found by hone's property tests): its folder unrolls a
        # Dropout whose mask is used, its Transpose+MatMul rule ignores a 1-D operand, its
        # SkipLayerNormalization rule can leave the graph unsorted, its rules overwrite
        # initializers of the same name, and its no-op rules take 1e-10 for 0. Hide the first two
        # and the last, then sort and restore.
        # optimize_for_ort fuses Add + LayerNormalization but not a spelled-out LayerNorm;
        # onnxscript's own rule does, in the opset-18 form (ReduceMean axes as an input) that
        # raise_opset gives older graphs; before the hiding, which would hide BERT's 1e-12 epsilon
        layer_norms = 0
        if _opset(model) >= 18:
            _spell_out_keepdims(model)
            layer_norms = layer_normalization_ruleset.apply_to_model(model)
        dropouts = hide_dropouts_with_kept_masks(model)
        matmuls = _hide_low_rank_matmuls(model)
        near_neutral = _hide_near_neutral_arithmetic(model)
        hidden = [*dropouts, *matmuls, *near_neutral]
        if hidden:  # declared, so onnx's shape inference skips the hidden nodes instead of failing
            model.opset_imports[_HIDDEN_FROM_FUSIONS_DOMAIN] = 1
        try:
            fused, counts = ort_fusions.optimize_for_ort(model)
            counts["layer_norm"] = layer_norms
        finally:
            for node in hidden:
                node.domain = ""
            model.opset_imports.pop(_HIDDEN_FROM_FUSIONS_DOMAIN, None)
        assert fused is model, "optimize_for_ort rewrites in place"
        model.graph.sort()
        restore_overwritten_initializers(model)
        self.matched = sum(counts.values())
        self.missed = _missed(model)
        return ir.passes.PassResult(model, modified=node_count(model) != before or self.matched > 0)


def _spell_out_keepdims(model: ir.Model) -> None:
    """ReduceMean's default keepdims=1 written out: the LayerNorm rule's pattern names it, and
    TorchScript's export leaves it to the default."""
    for node in model.graph:
        if is_onnx_op(node, "ReduceMean") and "keepdims" not in node.attributes:
            node.attributes["keepdims"] = ir.AttrInt64("keepdims", 1)


def _opset(model: ir.Model) -> int:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))


def _missed(model: ir.Model) -> list[str]:
    ops = [node.op_type for node in model.graph]
    missed = []
    attention = {"Attention", "MultiHeadAttention", "GroupQueryAttention"}
    if "Softmax" in ops and not attention & set(ops):
        missed.append(
            f"attention: {ops.count('Softmax')} Softmax left, no Attention/MultiHeadAttention fused"
        )
    if "Erf" in ops:
        missed.append(f"gelu: {ops.count('Erf')} Erf left unfused")
    if "ReduceMean" in ops and "Sqrt" in ops:
        missed.append(f"layer_norm: {ops.count('ReduceMean')} ReduceMean left with Sqrt")
    return missed
