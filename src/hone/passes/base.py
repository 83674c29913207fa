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
        from hone.passes.infer_shapes import infer_shapes  # here: infer_shapes imports this module

        infer_shapes(model)
        flat: list[RewriteRule] = []
        for rule in self.rules:
            flat.extend(rule.rules if isinstance(rule, RewriteRuleSet) else [rule])
        count = RewriteRuleSet(flat).apply_to_model(model)
        # onnxscript's rules can overwrite an initializer of the same name: register it again.
        from hone.passes.collapse_chains import restore_overwritten_initializers

        restore_overwritten_initializers(model)
        # Rules that cancel nodes leave an Identity behind; drop those (graph outputs keep names).
        eliminate_identities(model)
        self.matched = count
        self.missed = self.find_missed(model)
        return ir.passes.PassResult(model, modified=count > 0)

    def find_missed(self, model: ir.Model) -> list[str]:
        """Patterns this pass should have rewritten but the graph still holds (none by default)."""
        return []


def eliminate_identities(model: ir.Model) -> int:
    """Identity(x) -> x in the main graph; returns how many went.

    Written here instead of onnx-ir's IdentityEliminationPass, which also removes an Identity
    between two graph outputs and so merges two outputs into one. Such an Identity (and one from
    a graph input or an initializer straight to an output) is kept. When the Identity's output is
    a graph output, its input takes over the output's name.
    """
    graph, removed = model.graph, 0
    for node in list(graph):
        if node.op_type != "Identity" or node.domain not in ("", "ai.onnx") or node.inputs[0] is None:
            continue
        source, output = node.inputs[0], node.outputs[0]
        if output.is_graph_output():
            if source.is_graph_output() or source.is_graph_input() or source.is_initializer():
                continue
            name = output.name
            output.replace_all_uses_with(source, replace_graph_outputs=True)
            graph.remove(node, safe=True)
            source.name = name
        else:
            output.replace_all_uses_with(source)
            graph.remove(node, safe=True)
        removed += 1
    return removed


def producer_op(value: ir.Value | None) -> str | None:
    node = value.producer() if value is not None else None
    return node.op_type if node is not None else None


def node_count(model: ir.Model) -> int:
    return sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph))
