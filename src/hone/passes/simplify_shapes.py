"""Shape-arithmetic simplification: Reshape(x, Concat(Shape(x)[0], Shape(x)[1], 12, 32)) ->
Reshape(x, [0, 0, 12, 32]); Reshape or Expand whose output shape equals its input's -> its input.

Exporters such as PyTorch's TorchScript exporter compute reshape targets at run time from
``Shape -> Gather -> Unsqueeze -> Concat`` so that batch and sequence stay dynamic. The result
is dozens of shape nodes per layer, and fusions that need constant reshape targets (attention)
cannot match. Once every dim is known symbolically (``batch``, ``sequence``, 384), a run-time
target can be spelled as a constant: a dim that equals the input's dim at the same position is
``0`` (Reshape copies it), a static dim is its number, and one remaining symbolic dim is ``-1``.
The shape nodes then have no users and dead-code elimination removes them.

Symbolic dims come from onnxruntime's ``SymbolicShapeInference`` (shipped with onnxruntime; it
knows contrib ops and tracks dims through Shape/Gather/Concat arithmetic with sympy, which onnx's
own shape inference does not). It assumes that dims which must broadcast together are equal
(``auto_merge``), like onnxruntime's transformer optimizer; the pipeline's verification runs the
result with distinct batch and sequence sizes, which is where a wrong merge would show.

The same inference also knows the *values* of small integer tensors computed from shapes. Where
such a value is fully static (``Gather(Shape(cos), 3)`` is 16 when cos is (B, 1, S, 16)), it becomes
a constant: Phi-3's rotary slices ``q[..., :cos.shape[-1]]``, and with a run-time bound neither
onnx's inference nor the fusions knew the slice's shape. Then a Slice that keeps its whole input
(every step 1) is its input, and a Concat drops its inputs that are empty along its axis (Phi-3's
``q[..., rotary_dim:]`` when the rotary covers the whole head), so that the rotary is a rotary of
the head split itself.

Leaves alone: Reshape with ``allowzero=1``; targets with two or more dims that are neither static
nor the input's own (``-1`` can stand for only one); values with a symbolic element, of a non-integer
type or that are graph outputs; models symbolic shape inference cannot handle (reported as missed,
nothing rewritten); nodes inside subgraphs.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_ir as ir

from hone.passes.base import HonePass
from hone.passes.graph import is_onnx_op

logger = logging.getLogger(__name__)

Dim = int | str  # a static size or a symbolic name such as "batch" or "batch*sequence"


class SimplifyShapesPass(HonePass):
    name = "simplify_shapes"

    def rewrite(self, model: ir.Model) -> ir.passes.PassResult:
        self.matched = 0
        try:
            shapes, values = symbolic_inference(model)
        except Exception as exc:  # noqa: BLE001 - the library raises plain Exception on graphs it cannot follow
            self.missed = [
                f"symbolic shape inference failed, nothing simplified: {type(exc).__name__}: {exc}"
            ]
            return ir.passes.PassResult(model, modified=False)
        self.matched += _fold_known_values(model, values, shapes)
        self.matched += _drop_empty_concat_inputs(model, shapes)
        unsimplified: list[str] = []
        for node in list(model.graph):
            if is_onnx_op(node, "Slice") and not _steps_are_one(node):
                continue  # a reversing Slice keeps the shape, not the data
            if not is_onnx_op(node, "Reshape", "Expand", "Slice"):
                continue
            source, target, output = node.inputs[0], node.inputs[1], node.outputs[0]
            if source is None or target is None or source.name is None or output.name is None:
                continue
            in_shape, out_shape = shapes.get(source.name), shapes.get(output.name)
            if in_shape is None or out_shape is None:
                continue
            # The symbolic inference can get reversed Slices wrong (a negative length): trust no
            # shape with a negative dim, nor one that contradicts onnx's own inference.
            if any(isinstance(d, int) and d < 0 for d in [*in_shape, *out_shape]) or not (
                _agrees(source, in_shape) and _agrees(output, out_shape)
            ):
                continue
            if output not in model.graph.outputs and _same(in_shape, out_shape):
                output.replace_all_uses_with(source)
                model.graph.remove(node, safe=True)
                self.matched += 1
                continue
            if node.op_type != "Reshape" or target.const_value is not None:
                continue
            allowzero = node.attributes.get("allowzero")
            if allowzero is not None and allowzero.as_int():
                continue
            constant = reshape_target(in_shape, out_shape)
            if constant is None:
                unsimplified.append(node.name or output.name)
                continue
            value = ir.Value(
                name=f"{output.name}_target", const_value=ir.tensor(np.array(constant, np.int64))
            )
            value.shape, value.type = ir.Shape([len(constant)]), ir.TensorType(ir.DataType.INT64)
            model.graph.initializers.add(value)
            node.replace_input_with(1, value)
            self.matched += 1
        if self.matched:
            ir.passes.common.RemoveUnusedNodesPass()(model)
            _reinfer_unknown_dims(model)
        self.missed = [
            f"run-time reshape target left (more than one unknown dim): {name}" for name in unsimplified
        ]
        return ir.passes.PassResult(model, modified=self.matched > 0)


def symbolic_shapes(model: ir.Model) -> dict[str, list[Dim | None]]:
    """Every value's shape as onnxruntime's symbolic shape inference sees it (None: unknown dim)."""
    return symbolic_inference(model)[0]


def symbolic_inference(model: ir.Model) -> tuple[dict[str, list[Dim | None]], dict[str, np.ndarray]]:
    """onnxruntime's symbolic shape inference of ``model``: every value's shape (None: unknown dim),
    and the values it computed of shape-derived tensors that are fully static integers."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    proto = ir.to_proto(model)
    _spell_constants_as_tensors(proto.graph)
    # SymbolicShapeInference.infer_shapes() does these steps too, but when some shape stays unknown it
    # writes sym_shape_infer_temp.onnx (and its data) into the working directory and raises; hone
    # must not write into the user's folder, and a partial result is still useful here.
    inference = SymbolicShapeInference(2**31 - 1, True, False, 0)  # int_max, auto_merge, guess_rank, verbose
    inference._preprocess(proto)
    while inference.run_:
        inference._infer_impl()
    inference._update_output_from_vi()
    inferred = inference.out_mp_
    shapes: dict[str, list[Dim | None]] = {}
    for info in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tensor_type = info.type.tensor_type
        if info.type.HasField("tensor_type") and tensor_type.HasField("shape"):
            shapes[info.name] = [_dim(d) for d in tensor_type.shape.dim]
    values = {}
    for name, data in inference.sympy_data_.items():
        static = _static_integers(data)
        if static is not None:
            values[name] = static
    return shapes, values


MAX_FOLDED_ELEMENTS = 64  # shape arithmetic only: a rank's worth of dims, not data


def _static_integers(data: object) -> np.ndarray | None:
    """``data`` (ints, sympy numbers, lists or arrays of them) as an int64 array, or None when an
    element is symbolic, not an integer, or a bool."""
    import sympy

    array = np.asarray(data, dtype=object)
    if array.size > MAX_FOLDED_ELEMENTS:
        return None
    found = []
    for element in array.flat:
        if isinstance(element, bool | np.bool_ | sympy.logic.boolalg.BooleanAtom):
            return None
        if isinstance(element, int | np.integer):
            found.append(int(element))
        elif isinstance(element, sympy.Integer):
            found.append(int(element))
        else:
            return None
    return np.array(found, np.int64).reshape(array.shape)


_INTEGER_TYPES = {ir.DataType.INT64: np.int64, ir.DataType.INT32: np.int32}


def _fold_known_values(
    model: ir.Model, values: dict[str, np.ndarray], shapes: dict[str, list[Dim | None]]
) -> int:
    """Replace every integer node output whose value the inference knows fully by a constant."""
    folded = 0
    outputs = set(model.graph.outputs)
    for node in list(model.graph):
        if node.op_type == "Constant" or node.domain not in ("", "ai.onnx"):
            continue
        for output in node.outputs:
            array = values.get(output.name or "")
            dtype = output.type.dtype if output.type is not None else None
            if array is None or output in outputs or dtype not in _INTEGER_TYPES or not output.uses():
                continue
            if output.shape is not None:
                rank: int | None = len(output.shape)
            else:
                inferred = shapes.get(output.name or "")
                rank = None if inferred is None else len(inferred)
            if rank != array.ndim:
                continue  # a scalar the inference stored as a list, or the reverse: not sure, leave it
            constant = ir.Value(
                name=f"{output.name}_static", const_value=ir.tensor(array.astype(_INTEGER_TYPES[dtype]))
            )
            constant.shape, constant.type = ir.Shape(list(array.shape)), ir.TensorType(dtype)
            model.graph.initializers.add(constant)
            output.replace_all_uses_with(constant)
            folded += 1
    return folded


def _reinfer_unknown_dims(model: ir.Model) -> None:
    """Infer again the shapes that have unknown dims, with the symbolic inference: onnx's keeps a
    value's recorded ``unk__7`` rather than the ``batch`` it would now find behind a bound that
    became constant, and would name apart dims that are one (BERT's residual Adds, both
    [batch, sequence, 384], which SkipLayerNormalization's rule compares). Shapes are only ever
    replaced by ones with fewer unknown dims."""
    try:
        shapes, _ = symbolic_inference(model)
    except Exception:  # noqa: BLE001 - it followed the graph before the rewrite; if not now, keep what is known
        return
    graph_values = {*model.graph.inputs, *model.graph.outputs}
    for node in model.graph:
        for value in node.outputs:
            inferred = shapes.get(value.name or "")
            if value in graph_values or inferred is None:
                continue
            candidate = ir.Shape([d if isinstance(d, int) else ir.SymbolicDim(d) for d in inferred])
            if value.shape is None or (
                len(candidate) == len(value.shape) and _unknown_dims(candidate) < _unknown_dims(value.shape)
            ):
                value.shape = candidate


def _unknown_dims(shape: ir.Shape) -> int:
    return sum(
        1 for d in shape if not isinstance(d, int) and (d.value is None or d.value.startswith("unk__"))
    )


def _steps_are_one(slice_node: ir.Node) -> bool:
    steps = slice_node.inputs[4] if len(slice_node.inputs) > 4 else None
    if steps is None:
        return True
    return steps.const_value is not None and bool(np.all(steps.const_value.numpy() == 1))


def _drop_empty_concat_inputs(model: ir.Model, shapes: dict[str, list[Dim | None]]) -> int:
    """Concat inputs that are empty along the Concat's axis are dropped (one input left: its input)."""
    dropped = 0
    outputs = set(model.graph.outputs)
    for node in list(model.graph):
        if not is_onnx_op(node, "Concat") or node.outputs[0].name not in shapes:
            continue
        out_shape = shapes[node.outputs[0].name or ""]
        axis = node.attributes.get("axis")
        if axis is None or not out_shape:
            continue
        axis_index = axis.as_int() % len(out_shape)
        kept: list[ir.Value] = []
        for value in node.inputs:
            dims = shapes.get(value.name or "") if value is not None else None
            if value is None or dims is None or len(dims) != len(out_shape):
                kept = []
                break
            if dims[axis_index] != 0:
                kept.append(value)
        if not kept or len(kept) == len(node.inputs):
            continue
        if (
            len(kept) == 1
            and node.outputs[0] not in outputs
            and _same(shapes.get(kept[0].name or "", []), out_shape)
        ):
            node.outputs[0].replace_all_uses_with(kept[0])
            model.graph.remove(node, safe=True)
        else:
            replacement = ir.node("Concat", kept, attributes={"axis": axis.as_int()}, name=node.name)
            model.graph.insert_after(node, replacement)
            old_output = node.outputs[0]
            replacement.outputs[0].shape, replacement.outputs[0].type = old_output.shape, old_output.type
            old_output.replace_all_uses_with(replacement.outputs[0], replace_graph_outputs=True)
            model.graph.remove(node, safe=True)
            replacement.outputs[0].name = old_output.name
        dropped += 1
    return dropped


_CONSTANT_ATTRIBUTES = {
    "value_float": np.float32,
    "value_floats": np.float32,
    "value_int": np.int64,
    "value_ints": np.int64,
}


def _spell_constants_as_tensors(graph: onnx.GraphProto) -> None:
    """Constant(value_int=3) -> Constant(value=tensor(3)): the symbolic inference reads only ``value``."""
    for node in graph.node:
        if node.op_type != "Constant" or len(node.attribute) != 1:
            continue
        attribute = node.attribute[0]
        if attribute.name in _CONSTANT_ATTRIBUTES:
            array = np.array(
                onnx.helper.get_attribute_value(attribute), dtype=_CONSTANT_ATTRIBUTES[attribute.name]
            )
            node.ClearField("attribute")
            node.attribute.append(onnx.helper.make_attribute("value", onnx.numpy_helper.from_array(array)))


def _dim(dim: onnx.TensorShapeProto.Dimension) -> Dim | None:
    if dim.HasField("dim_value"):
        return dim.dim_value
    if dim.HasField("dim_param") and dim.dim_param:
        return dim.dim_param
    return None


def _agrees(value: ir.Value, dims: list[Dim | None]) -> bool:
    """False when onnx's inferred shape of ``value`` has a static dim that ``dims`` contradicts."""
    if value.shape is None:
        return True
    if len(value.shape) != len(dims):
        return False
    return all(
        not isinstance(a, int) or not isinstance(b, int) or a == b
        for a, b in zip(value.shape, dims, strict=False)
    )


def _same(a: list[Dim | None], b: list[Dim | None]) -> bool:
    return len(a) == len(b) and all(x is not None and x == y for x, y in zip(a, b, strict=False))


def reshape_target(in_shape: list[Dim | None], out_shape: list[Dim | None]) -> list[int] | None:
    """The constant Reshape target that gives ``out_shape`` from ``in_shape``, or None if none does.

    Static dims stay; a symbolic dim equal to the input's at the same position becomes 0 (copy);
    one other symbolic dim becomes -1. With more than one such dim, or an unknown dim, None.
    """
    target: list[int] = []
    for index, dim in enumerate(out_shape):
        if dim is None:
            return None
        if isinstance(dim, int):
            if dim == 0:  # a zero-sized dim would read as "copy" under allowzero=0
                return None
            target.append(dim)
        elif index < len(in_shape) and in_shape[index] == dim:
            target.append(0)
        else:
            target.append(-1)
    return target if target.count(-1) <= 1 else None
