"""Chain collapsing: Cast->Cast, Transpose->Transpose, Reshape->Reshape, Unsqueeze->Unsqueeze,
Slice->Slice, Relu->Relu, Clip->Clip (and Relu<->Clip) -> one node (or none when they cancel).

onnxscript's rules, each with its own check (e.g. Cast->Cast only where the middle type loses no
precision). Leaves alone: chains whose intermediate value is also used elsewhere.

onnxscript 0.7's rewriter can overwrite an initializer of the same name as one a rule creates (the
Clip/Relu rules name theirs ``<x>_min`` and ``<x>_max``, Reshape->Reshape ``<output>/shape``);
``RewriteRulesPass`` puts each such constant back (``graph.restore_overwritten_initializers``).
"""

from __future__ import annotations

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
