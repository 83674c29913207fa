"""What the graph says about valid inputs: which axis is the batch, and which values an integer may take.

hone invents inputs when the user gives no data, so they must be inputs the model can run on.
Two facts are read off the graph (subgraphs of If/Loop/Scan included, since onnx-ir lists a
value's uses inside them):

- **The batch axis** of each input is where the symbolic dim shared by the inputs and the outputs
  sits (``[2, N, 128]`` has it at axis 1), never assumed to be axis 0. Among several shared dims
  (``batch`` and ``sequence`` in a text model), the one in the most outputs wins, then the one
  named like a batch, then the one nearest the front. A model with no such dim has no batch axis
  and runs at batch 1 only. Old exports with unnamed dynamic dims count axis 0 when it is dynamic
  in every input and output.
- **Index bounds** of integer inputs: an input that reaches (through value-preserving ops such as
  Cast, Reshape, Unsqueeze, Concat or Slice) the indices of Gather, GatherElements, GatherND,
  ScatterElements, ScatterND or OneHot may take values only below the indexed dim, or below K when
  it is compared by ``Equal`` with a constant 0..K-1 (a one-hot spelled out); an input compared
  with ``Equal`` to a one-element constant (``sr == 16000`` choosing an If branch) takes that
  constant. A bound is an int or the name of a symbolic dim, resolved when shapes are.

Everything else stays as before (name hints in ``hone.data``), and ``hone.data.check_invented``
runs the model once to catch what the graph does not say.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

# Ops whose output holds (a subset or rearrangement of) the values of their first input.
_VALUE_PRESERVING = frozenset(
    {
        "Cast",
        "CastLike",
        "Reshape",
        "Unsqueeze",
        "Squeeze",
        "Flatten",
        "Identity",
        "Transpose",
        "Expand",
        "Slice",
        "Concat",
        "Split",
        "Tile",
        "Gather",
        "GatherElements",
        "GatherND",
        "ReduceMax",
        "ReduceMin",
    }
)
_BATCH_NAMES = ("batch", "batch_size", "n", "b", "bs", "batchsize", "num_batch")


@dataclass
class InputFacts:
    """What the graph tells about one input."""

    batch_axis: int | None = None
    index_bounds: list[int | str] = field(default_factory=list)  # values must stay below each
    equal_constants: list[int] = field(default_factory=list)  # compared with these by Equal


def _dim_name(dim: object) -> str | None:
    if isinstance(dim, ir.SymbolicDim):
        return dim.value
    return None


def _has_dim(value: ir.Value, name: str) -> bool:
    """Whether ``value``'s shape has the symbolic dim ``name``."""
    return value.shape is not None and any(_dim_name(d) == name for d in value.shape)


def _is_dynamic(dim: object) -> bool:
    return not isinstance(dim, int)


def batch_axes(inputs: Sequence[ir.Value], outputs: Sequence[ir.Value]) -> dict[str, int | None]:
    """The batch axis of every input and output (None where it has none), by value name."""
    shaped_inputs = [v for v in inputs if v.shape is not None and len(v.shape) > 0]
    result: dict[str, int | None] = {v.name or "": None for v in (*inputs, *outputs)}
    if not shaped_inputs:
        return result
    names: dict[str, list[int]] = {}  # dim name -> axes where it appears, over the inputs
    for value in shaped_inputs:
        for axis, dim in enumerate(value.shape):  # type: ignore[arg-type]
            name = _dim_name(dim)
            if name:
                names.setdefault(name, []).append(axis)
    shaped_outputs = [v for v in outputs if v.shape is not None]
    output_counts = {name: sum(1 for v in shaped_outputs if _has_dim(v, name)) for name in names}
    candidates = [n for n in names if output_counts[n] > 0 or not shaped_outputs]
    if candidates:

        def score(name: str) -> tuple[int, int, int, float]:
            inputs_with = sum(1 for v in shaped_inputs if _has_dim(v, name))
            return (
                output_counts[name],
                inputs_with,
                int(name.lower() in _BATCH_NAMES),
                -float(np.mean(names[name])),
            )

        chosen = max(candidates, key=score)
        for value in (*shaped_inputs, *(v for v in outputs if v.shape is not None)):
            axes = [axis for axis, dim in enumerate(value.shape) if _dim_name(dim) == chosen]  # type: ignore[arg-type]
            result[value.name or ""] = axes[0] if axes else None
        return result
    # Unnamed dynamic dims: axis 0 when it is dynamic everywhere it can be seen.
    if all(_is_dynamic(v.shape[0]) for v in shaped_inputs) and all(  # type: ignore[index]
        v.shape is None or (len(v.shape) > 0 and _is_dynamic(v.shape[0])) for v in outputs
    ):
        for value in (*shaped_inputs, *(v for v in outputs if v.shape is not None and len(v.shape) > 0)):
            result[value.name or ""] = 0
    return result


def input_facts(model_ir: ir.Model) -> dict[str, InputFacts]:
    """Batch axis, index bounds and compared constants of every graph input (and the batch axis
    of every output), by name."""
    graph = model_ir.graph
    axes = batch_axes(graph.inputs, graph.outputs)
    initializers = set(graph.initializers)
    facts: dict[str, InputFacts] = {}
    for value in graph.inputs:
        if value.name in initializers:
            continue
        fact = InputFacts(batch_axis=axes.get(value.name or ""))
        if value.dtype is not None and value.dtype.is_integer():
            _trace(value, fact, set())
        facts[value.name or ""] = fact
    for value in graph.outputs:
        facts.setdefault(value.name or "", InputFacts(batch_axis=axes.get(value.name or "")))
    return facts


def _trace(value: ir.Value, fact: InputFacts, seen: set[int]) -> None:
    """Follow ``value`` through value-preserving ops to the index inputs and comparisons it reaches."""
    if id(value) in seen:
        return
    seen.add(id(value))
    for node, index in value.uses():
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            continue
        bound = _index_bound(node, index)
        if bound is not None:
            fact.index_bounds.append(bound)
        elif op == "Equal":
            other = node.inputs[1 - index] if len(node.inputs) == 2 else None
            constant = _constant_scalar(other)
            if constant is not None:
                fact.equal_constants.append(constant)
            elif (classes := _iota_length(other)) is not None:
                fact.index_bounds.append(classes)
        if op in _VALUE_PRESERVING and (index == 0 or op == "Concat"):
            for output in node.outputs:
                _trace(output, fact, seen)


def _index_bound(node: ir.Node, index: int) -> int | str | None:
    """The exclusive bound on the values fed to ``node``'s input ``index``, when that input is indices."""
    op = node.op_type
    if op in ("Gather", "GatherElements", "ScatterElements", "Scatter") and index == 1:
        axis = _int_attribute(node, "axis", 0)
        return _dim_of(node.inputs[0], axis)
    if op in ("GatherND", "ScatterND") and index == 1:
        batch_dims = _int_attribute(node, "batch_dims", 0)
        return _dim_of(node.inputs[0], batch_dims)  # the first indexed dim; the others are checked by the run
    if op == "OneHot" and index == 0 and len(node.inputs) > 1:
        return _constant_scalar(node.inputs[1])
    return None


def _int_attribute(node: ir.Node, name: str, default: int) -> int:
    attribute = node.attributes.get(name)
    if attribute is None:
        return default
    try:
        return int(attribute.as_int())
    except (TypeError, ValueError, AttributeError):
        return default


def _dim_of(value: ir.Value | None, axis: int) -> int | str | None:
    if value is None:
        return None
    shape = value.shape
    tensor = _constant_tensor(value)
    if tensor is not None:
        shape = ir.Shape(tensor.shape)
    if shape is None or len(shape) == 0:
        return None
    if axis < 0:
        axis += len(shape)
    if not 0 <= axis < len(shape):
        return None
    dim = shape[axis]
    if isinstance(dim, int):
        return dim
    return _dim_name(dim)


def _constant_tensor(value: ir.Value | None):
    """The tensor of an initializer or of a Constant node's ``value``, else None."""
    if value is None:
        return None
    if value.const_value is not None:
        return value.const_value
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant":
        attribute = producer.attributes.get("value")
        return attribute.as_tensor() if attribute is not None else None
    return None


def _iota_length(value: ir.Value | None) -> int | None:
    """K when ``value`` is a constant holding 0, 1, ..., K-1 (any shape): what a one-hot written as
    ``Equal(x, iota)`` compares against (jax2tf's ``one_hot``, magika's 257 byte values)."""
    tensor = _constant_tensor(value)
    if tensor is None:
        return None
    array = tensor.numpy().reshape(-1)
    if array.size < 2 or not np.issubdtype(array.dtype, np.integer):
        return None
    return int(array.size) if np.array_equal(array, np.arange(array.size)) else None


def _constant_scalar(value: ir.Value | None) -> int | None:
    """The integer held by a constant one-element value (an initializer or a Constant node)."""
    tensor = _constant_tensor(value)
    if tensor is None:
        return None
    array = tensor.numpy()
    if array.size != 1 or not np.issubdtype(array.dtype, np.integer):
        return None
    return int(array.reshape(()))
