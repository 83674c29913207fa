"""Constant folding: a node whose inputs are all constant -> an initializer holding its output.

onnxscript's folder (``fold_constants_ir``) does the work. Capped so that Tile/Expand/
ConstantOfShape and friends are not unrolled into huge initializers: a node is folded only when
its inputs hold at most ``INPUT_SIZE_LIMIT`` elements and its output at most
``OUTPUT_SIZE_LIMIT``. Leaves alone: nodes with a non-constant input, random ops, larger outputs.

Works around bugs of onnxscript's folder (onnxscript 0.7), before it runs:

- ``CastLike(x, like)`` with a known target type becomes ``Cast(x, to=...)`` there, dropping the
  node's ``saturate`` and ``round_mode``: with ``saturate=0`` a float8 cast then clamped to the
  largest finite value instead of giving inf/NaN. hone turns such a CastLike into that Cast
  itself, attributes kept.
- ``SplitToSequence(x, split)`` with a scalar ``split`` that is not constant crashes its
  evaluator (``split_value.ndim`` on None), which failed the whole pass. hone hides that
  ``split``'s shape from the folder (the evaluator then leaves the node alone) and restores it.
- An inference ``Dropout`` whose mask is used becomes ``Identity`` + ``Shape`` +
  ``ConstantOfShape`` there: one node became three, for good when the mask is a graph output or
  its shape is not static (nothing folds it later). hone hides such a Dropout from the folder
  (a private domain for the duration) and restores it.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.optimizer import fold_constants_ir

from hone.passes.base import HonePass
from hone.passes.graph import is_onnx_op, node_count

INPUT_SIZE_LIMIT = 1 << 20
OUTPUT_SIZE_LIMIT = 1 << 20


class FoldConstantsPass(HonePass):
    name = "fold_constants"

    def rewrite(self, model: ir.Model) -> ir.passes.PassResult:
        before = node_count(model)
        cast_likes = _cast_likes_to_casts(model)
        hidden = _hide_scalar_split_shapes(model)
        dropouts = hide_dropouts_with_kept_masks(model)
        try:
            result = fold_constants_ir(
                model, input_size_limit=INPUT_SIZE_LIMIT, output_size_limit=OUTPUT_SIZE_LIMIT
            )
        finally:
            for value, shape in hidden:
                value.shape = shape
            for node in dropouts:
                node.domain = ""
        # Folded nodes stay until dead-code elimination; clean them up here so counts are honest.
        ir.passes.common.RemoveUnusedNodesPass()(model)
        modified = bool(result.modified) or cast_likes > 0 or node_count(model) != before
        return ir.passes.PassResult(model, modified=modified)


def _all_nodes(model: ir.Model) -> list[ir.Node]:
    nodes = list(ir.traversal.RecursiveGraphIterator(model.graph))
    for function in model.functions.values():
        nodes.extend(ir.traversal.RecursiveGraphIterator(function))
    return nodes


def _cast_likes_to_casts(model: ir.Model) -> int:
    """CastLike with attributes and a known target type -> Cast with ``to`` and those attributes."""
    replaced = 0
    for node in _all_nodes(model):
        if not is_onnx_op(node, "CastLike") or not node.attributes or len(node.inputs) < 2:
            continue
        like = node.inputs[1]
        if like is None or like.dtype is None or like.dtype == ir.DataType.UNDEFINED:
            continue
        attributes = [ir.AttrInt64("to", like.dtype.value), *node.attributes.values()]
        cast = ir.Node(node.domain, "Cast", [node.inputs[0]], attributes, num_outputs=1, name=node.name)
        root = node.graph
        assert root is not None, "nodes from a graph traversal belong to a graph"
        # Moves the output's name, type and shape to the Cast and rewires its users.
        ir.convenience.replace_nodes_and_values(root, node, [node], [cast], node.outputs, cast.outputs)
        replaced += 1
    return replaced


def _hide_scalar_split_shapes(model: ir.Model) -> list[tuple[ir.Value, ir.Shape]]:
    """Clear the shape of each non-constant scalar ``split`` of a SplitToSequence; returns them."""
    hidden = []
    for node in _all_nodes(model):
        if not is_onnx_op(node, "SplitToSequence") or len(node.inputs) < 2:
            continue
        split = node.inputs[1]
        if split is None or split.const_value is not None or split.shape is None or split.shape.rank() != 0:
            continue
        hidden.append((split, split.shape))
        split.shape = None
    return hidden


# Not imported by the model, so the folder skips a node of this domain.
_HIDDEN_FROM_FOLDER_DOMAIN = "hone.hidden_from_folder"


def hide_dropouts_with_kept_masks(model: ir.Model) -> list[ir.Node]:
    """Move each Dropout whose mask the folder would turn into Shape+ConstantOfShape for good
    (the mask is a graph output, or its shape is not static) out of the folder's sight: into a
    private domain the model does not import. Returns them; the caller sets their ``domain`` back
    to "" once the folder (or anything that runs it, such as onnxscript's ``optimize_for_ort``) is done."""
    hidden = []
    for node in _all_nodes(model):
        if not is_onnx_op(node, "Dropout") or len(node.outputs) < 2 or node.inputs[0] is None:
            continue
        mask = node.outputs[1]
        if not (mask.uses() or mask.is_graph_output()) or node.inputs[0].const_value is not None:
            continue
        shape = node.inputs[0].shape
        if mask.is_graph_output() or shape is None or not shape.is_static():
            node.domain = _HIDDEN_FROM_FOLDER_DOMAIN
            hidden.append(node)
    return hidden
