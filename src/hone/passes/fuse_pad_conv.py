"""Pad -> Conv  ->  Conv with the padding in its ``pads`` (constant mode, zero value, spatial dims).

onnxscript's ``fuse_pad_into_conv`` rules (and the pads normalization they need). Leaves alone:
reflect/edge padding, non-zero pad values, padding of batch or channel dims.
"""

from __future__ import annotations

from onnxscript.rewriter.rules import common as rules

from hone.passes.base import RewriteRulesPass


class FusePadConvPass(RewriteRulesPass):
    name = "fuse_pad_conv"
    rules = (rules.normalize_pad_format_conv_rule, rules.fuse_pad_into_conv_rule)
