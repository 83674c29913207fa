"""What every hone pass is: an onnx-ir in-place pass that also says what it matched and missed.

``matched`` is how many patterns a fusion rewrote; ``missed`` names the patterns the graph still
holds after the pass that it was expected to rewrite (a silent miss is a known pain of other
tools, so every fusion reports its own). Both are reset on each call.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import onnx_ir as ir
from onnxscript.rewriter import RewriteRuleSet
from onnxscript.rewriter._rewrite_rule import RewriteRule

from hone.passes.graph import eliminate_identities, infer_shapes, restore_overwritten_initializers


class HonePass(ir.passes.InPlacePass):
    """Base of hone's passes. ``name`` is the snake_case name reports and flags use."""

    name = "pass"
    # Targets this pass applies to; passes that emit contrib ops leave out "web" and "generic".
    targets: tuple[str, ...] = ("ort-cpu", "ort-cuda", "web", "generic")

    def __init__(self) -> None:
        super().__init__()
        self.matched: int | None = None
        self.missed: list[str] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.matched = None
        self.missed = []
        return self.rewrite(model)

    @abc.abstractmethod
    def rewrite(self, model: ir.Model) -> ir.passes.PassResult:
        """Rewrite ``model`` in place; set ``matched``/``missed`` where they mean something."""


class RewriteRulesPass(HonePass):
    """A pass made of onnxscript rewrite rules (pattern / check / rewrite); counts the matches."""

    rules: Sequence[RewriteRule | RewriteRuleSet] = ()

    def rewrite(self, model: ir.Model) -> ir.passes.PassResult:
        # Several rules check shapes (x+0 is a no-op only when broadcasting changes nothing).
        infer_shapes(model)
        flat: list[RewriteRule] = []
        for rule in self.rules:
            flat.extend(rule.rules if isinstance(rule, RewriteRuleSet) else [rule])
        count = RewriteRuleSet(flat).apply_to_model(model)
        # onnxscript's rules can overwrite an initializer of the same name: register it again.
        restore_overwritten_initializers(model)
        # Rules that cancel nodes leave an Identity behind; drop those (graph outputs keep names).
        eliminate_identities(model)
        self.matched = count
        self.missed = self.find_missed(model)
        return ir.passes.PassResult(model, modified=count > 0)

    def find_missed(self, model: ir.Model) -> list[str]:
        """Patterns this pass should have rewritten but the graph still holds (none by default)."""
        return []
