"""RMS normalization for onnxruntime targets: the spelled-out RMSNorm of Llama, Qwen2, Mistral ...
-> one ``SimplifiedLayerNormalization`` (onnxruntime's name for it; fused further with a residual
Add into ``SkipSimplifiedLayerNormalization`` by ``fuse_transformer``).

The pattern, from the ReduceMean outwards::

    ms = ReduceMean(Pow(x, 2) | Mul(x, x), axes=[-1], keepdims=1)
    rms = Sqrt(ms + eps)
    y = x * Reciprocal(rms) | x * (1 / rms) | x / rms
    out = y * weight | weight * y                          # weight 1-D and constant; optional

Written here rather than taken from onnxscript's ``ort_fusions`` rule, which wants ``Reciprocal``
and the opset-18 ReduceMean (axes as an input): the TorchScript export of ``torch.rsqrt`` is
``Div(1, Sqrt)``, and hone's decoders are opset 17. Both ReduceMean forms are read here. A Cast
on the way (float32 models export ``x.float()`` as one) must have been folded away, as
``fold_constants`` does for a Cast to the type a value already has. A spelled-out LayerNorm (the
mean square of ``x - mean(x)``) is left to ``fuse_transformer``. Leaves alone, reported as
missed with the reason: a mean over another axis, an epsilon that is not a constant scalar, a
weight that is not a 1-D constant, values used outside the pattern.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from hone.passes.base import HonePass
from hone.passes.graph import int_attribute, is_onnx_op, last_static_dim, scalar_of


class NoMatch(Exception):
    """Why a ReduceMean is not the mean square of an RMSNorm (the text goes into ``missed``)."""


class FuseRmsNormPass(HonePass):
    name = "fuse_rms_norm"
    targets = ("ort-cpu", "ort-cuda")

    def rewrite(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        self.matched = 0
        for mean in [n for n in graph if is_onnx_op(n, "ReduceMean")]:
            if not _squares(mean) or _centred(mean):
                continue  # a ReduceMean of something else (pooling), or a LayerNorm's variance
            try:
                x, epsilon, weight, output = _match(mean, graph)
            except NoMatch as reason:
                self.missed.append(f"rms_norm at {mean.name or mean.outputs[0].name}: {reason}")
                continue
            _replace(graph, x, epsilon, weight, output)
            self.matched += 1
        if self.matched:
            ir.passes.common.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified=self.matched > 0)


def _squares(mean: ir.Node) -> bool:
    """Whether ``mean`` averages a square (Pow(x, 2) or Mul(x, x))."""
    square = mean.inputs[0].producer() if mean.inputs and mean.inputs[0] is not None else None
    if square is None:
        return False
    if is_onnx_op(square, "Pow"):
        return scalar_of(square.inputs[1]) == 2.0
    return is_onnx_op(square, "Mul") and square.inputs[0] is square.inputs[1]


def _centred(mean: ir.Node) -> bool:
    """Whether the squared value is ``x - ReduceMean(x)``: a spelled-out LayerNorm, which
    ``fuse_transformer`` makes one LayerNormalization (and SkipLayerNormalization with its residual)."""
    square = mean.inputs[0].producer()  # type: ignore[union-attr]
    centred = square.inputs[0].producer() if square is not None and square.inputs[0] is not None else None
    if centred is None or not is_onnx_op(centred, "Sub") or centred.inputs[1] is None:
        return False
    subtracted = centred.inputs[1].producer()
    return (
        subtracted is not None
        and is_onnx_op(subtracted, "ReduceMean")
        and subtracted.inputs[0] is centred.inputs[0]
    )


def _match(mean: ir.Node, graph: ir.Graph) -> tuple[ir.Value, float, ir.Value | None, ir.Value]:
    """(x, epsilon, weight or None, the output replaced) of the RMSNorm at ``mean``. Every value
    between x and the output has one use, so the replaced nodes are dead once the output is."""
    outputs = set(graph.outputs)
    square = mean.inputs[0].producer() if mean.inputs[0] is not None else None
    x = square.inputs[0] if square is not None else None
    assert square is not None and x is not None, "_squares() found the square before"
    if _axes(mean) not in ([-1], [_rank(x) - 1]) or int_attribute(mean, "keepdims", 1) != 1:
        raise NoMatch("the mean is not over the last axis with keepdims=1")
    _single_use(square.outputs[0], outputs)
    add = _only_user(mean.outputs[0], outputs, "Add")
    epsilon = scalar_of(add.inputs[1] if add.inputs[0] is mean.outputs[0] else add.inputs[0])
    if epsilon is None:
        raise NoMatch("epsilon is not a constant scalar")
    sqrt = _only_user(add.outputs[0], outputs, "Sqrt")
    scale_user = _only_user(sqrt.outputs[0], outputs, "Div", "Reciprocal")
    if is_onnx_op(scale_user, "Div") and scale_user.inputs[0] is x:  # x / rms
        normalized = scale_user.outputs[0]
    else:
        if is_onnx_op(scale_user, "Div") and scalar_of(scale_user.inputs[0]) != 1.0:
            raise NoMatch("the root mean square divides something other than 1 or x")
        multiply = _only_user(scale_user.outputs[0], outputs, "Mul")
        if x not in multiply.inputs:
            raise NoMatch("1 / rms multiplies something other than the normalized input")
        normalized = multiply.outputs[0]
    weight, output = _weight(normalized, outputs, last_static_dim(x))
    if weight is None and last_static_dim(x) is None:
        raise NoMatch("no weight, and the hidden size is not a known number")
    return x, epsilon, weight, output


def _weight(
    normalized: ir.Value, outputs: set[ir.Value], hidden: int | None
) -> tuple[ir.Value | None, ir.Value]:
    """(weight, output) when ``normalized`` is scaled by a 1-D constant of the hidden size, else (None,
    normalized)."""
    uses = normalized.uses()
    if normalized in outputs or len(uses) != 1 or not is_onnx_op(next(iter(uses)).node, "Mul"):
        return None, normalized
    multiply = next(iter(uses)).node
    other = multiply.inputs[1] if multiply.inputs[0] is normalized else multiply.inputs[0]
    tensor = ir.convenience.get_const_tensor(other) if other is not None else None
    if tensor is None or tensor.shape.rank() != 1 or (hidden is not None and tensor.shape[0] != hidden):
        return None, normalized
    return other, multiply.outputs[0]


def _replace(
    graph: ir.Graph,
    x: ir.Value,
    epsilon: float,
    weight: ir.Value | None,
    output: ir.Value,
) -> None:
    anchor = output.producer()
    assert anchor is not None
    name = anchor.name or output.name or "rms_norm"
    if weight is None:  # the op needs a scale: ones of the hidden size
        hidden = last_static_dim(x)
        assert hidden is not None, "a weightless RMSNorm of unknown width is refused in _match"
        dtype = (x.dtype or ir.DataType.FLOAT).numpy()
        weight = ir.Value(name=f"{name}_ones", const_value=ir.tensor(np.ones(hidden, dtype=dtype)))
        weight.shape, weight.dtype = ir.Shape([hidden]), ir.DataType.from_numpy(np.dtype(dtype))
        graph.initializers.add(weight)
    fused = ir.node(
        "SimplifiedLayerNormalization",  # onnxruntime registers it in the default domain
        [x, weight],
        attributes={"axis": -1, "epsilon": float(epsilon)},
        name=f"{name}_rms_norm",
    )
    fused.outputs[0].shape = output.shape
    if output.dtype is not None:
        fused.outputs[0].dtype = output.dtype
    ir.convenience.replace_nodes_and_values(graph, anchor, [anchor], [fused], [output], [fused.outputs[0]])


def _only_user(value: ir.Value, outputs: set[ir.Value], *op_types: str) -> ir.Node:
    _single_use(value, outputs)
    user = next(iter(value.uses())).node
    if not is_onnx_op(user, *op_types):
        raise NoMatch(f"{value.name} goes to {user.op_type}, not {' or '.join(op_types)}")
    return user


def _single_use(value: ir.Value, outputs: set[ir.Value]) -> None:
    if value in outputs or len(value.uses()) != 1:
        raise NoMatch(f"{value.name} is used outside the RMSNorm pattern")


def _axes(mean: ir.Node) -> list[int] | None:
    attribute = mean.attributes.get("axes")
    if attribute is not None:
        return list(attribute.as_ints())
    if len(mean.inputs) > 1 and mean.inputs[1] is not None:  # opset 18: axes as an input
        tensor = ir.convenience.get_const_tensor(mean.inputs[1])
        return [int(a) for a in tensor.numpy().reshape(-1)] if tensor is not None else None
    return None


def _rank(value: ir.Value) -> int:
    return len(value.shape) if value.shape is not None else -1
