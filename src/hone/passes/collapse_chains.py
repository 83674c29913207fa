"""Chain collapsing: Cast->Cast, Transpose->Transpose, Reshape->Reshape, Unsqueeze->Unsqueeze,
Slice->Slice, Relu->Relu, Clip->Clip (and Relu<->Clip) -> one node (or none when they cancel).

onnxscript's rules, each with its own check (e.g. Cast->Cast only where the middle type loses no
precision). Leaves alone: chains whose intermediate value is also used elsewhere.

Works around onnxscript 0.7's rewriter, which stores a rule's new initializer under the name the
rule picks even when the graph already has an initializer of that name (its "already exists"
check is a ``continue`` of the inner loop): the old initializer leaves the graph while nodes
still read it, and the model is invalid. The Clip/Relu rules name theirs ``<x>_min`` and
``<x>_max``, Reshape->Reshape ``<output>/shape``; BatchNormalization folding ``<weight>_bias``.
``restore_overwritten_initializers`` puts each such constant back under a free name.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter.rules import common as rules

from hone.passes.base import RewriteRulesPass


class CollapseChainsPass(RewriteRulesPass):
    name = "collapse_chains"
    rules = (
        rules.cast_cast_rule,
        rules.transpose_transpose_rule,
        rules.reshape_reshape_rule,
        rules.unsqueeze_unsqueeze_rule,
        rules.squeeze_reshape_1d_rule,
        rules.collapse_slice_rule,
        rules.collapse_slice2_rule,
        rules.successive_relu_rule,
        rules.successive_clip_rule,
        rules.successive_clip_relu_rule,
        rules.successive_relu_clip_rule,
    )


def restore_overwritten_initializers(model: ir.Model) -> int:
    """Register again each constant that a node reads but the graph no longer holds (an
    initializer a rewrite rule overwrote with its own of the same name), under a free name;
    returns how many."""
    graph, restored = model.graph, 0
    for node in ir.traversal.RecursiveGraphIterator(graph):
        for value in node.inputs:
            if value is None or value.const_value is None or value.producer() is not None:
                continue
            if value.is_graph_input() or value.is_initializer():
                continue
            base, suffix = value.name or "initializer", 1
            name = base
            while name in graph.initializers:
                name, suffix = f"{base}_{suffix}", suffix + 1
            value.name = name
            graph.register_initializer(value)
            restored += 1
    return restored
