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

Leaves alone: Reshape with ``allowzero=1``; targets with two or more dims that are neither static
nor the input's own (``-1`` can stand for only one); models symbolic shape inference cannot
handle (reported as missed, nothing rewritten); nodes inside subgraphs.
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
            shapes = symbolic_shapes(model)
        except Exception as exc:  # noqa: BLE001 - the library raises plain Exception on graphs it cannot follow
            self.missed = [
                f"symbolic shape inference failed, nothing simplified: {type(exc).__name__}: {exc}"
            ]
            return ir.passes.PassResult(model, modified=False)
        unsimplified: list[str] = []
        for node in list(model.graph):
            if not is_onnx_op(node, "Reshape", "Expand"):
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
        self.missed = [
            f"run-time reshape target left (more than one unknown dim): {name}" for name in unsimplified
        ]
        return ir.passes.PassResult(model, modified=self.matched > 0)


def symbolic_shapes(model: ir.Model) -> dict[str, list[Dim | None]]:
    """Every value's shape as onnxruntime's symbolic shape inference sees it (None: unknown dim)."""
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
    return shapes


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
