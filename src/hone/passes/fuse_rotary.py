"""Rotary position embeddings for onnxruntime targets: the spelled-out ``rotate_half`` rotary of
Llama, Qwen2, Phi, Mistral ... -> one com.microsoft ``RotaryEmbedding`` with cos/sin caches.

The pattern (x is (B, N, S, D), cos and sin (B, 1, S, D) computed from the positions)::

    rot = Concat(Neg(Slice(x, D/2, D, axis=-1)), Slice(x, 0, D/2, axis=-1), axis=-1)
    out = x * cos + rot * sin                       # either order of each Mul and of the Add

The caches are not read off the graph's formula (inverse frequencies, scaling rules, dtype casts
vary by model and transformers version): the nodes that compute cos and sin are run once by
onnxruntime on the positions 0 .. context-1, and the result is kept only if it has the
``rotate_half`` form (both halves equal) and depends on nothing but the position (a reversed
second row must give the same rows). The context length comes from the decoder's metadata
(``hone export --target generate`` records it); a graph without it is left alone and reported.

When x is a head split, ``Transpose[0,2,1,3](Reshape(x3, [0, 0, N, D]))``, the rotary runs on the
(B, S, N*D) value x3 (``num_heads=N``) and the head split follows it, so that ``fuse_attention``
finds the query's head split and gives MultiHeadAttention the rotated x3 directly. A partial
rotary (Phi's first ``rotary_dim`` of each head) matches on its Slice: the rotated part is fused,
the Concat with the rest stays. Positions at or past the context are outside the caches:
onnxruntime refuses them, where the unfused graph extrapolated; hone's engine never feeds them.

Written here rather than taken from onnxscript's ``ort_fusions``: its rules want the Slice bounds
and axes as constants (the TorchScript export computes D/2 from ``Shape(x)`` and slices axis -1)
and its cos/sin cache rule wants the dynamo exporter's MatMul of the inverse frequencies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir

from hone.generate.types import LAYOUT_KEY, DecoderLayout
from hone.passes.base import HonePass
from hone.passes.graph import MS_DOMAIN, add_constant, int_attribute, is_onnx_op


class NoMatch(Exception):
    """Why a Neg is not the heart of a rotary embedding (the text goes into ``missed``)."""


@dataclass
class _Rotary:
    x: ir.Value  # (B, N, S, D)
    cos: ir.Value  # (B, 1, S, D), computed from the positions
    sin: ir.Value
    output: ir.Value


@dataclass(frozen=True)
class _Caches:
    positions: ir.Value  # the graph input cos and sin are computed from, (B, S)
    cos: np.ndarray  # (context, D/2)
    sin: np.ndarray


class FuseRotaryPass(HonePass):
    name = "fuse_rotary"
    targets = ("ort-cpu", "ort-cuda")

    def rewrite(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        self.matched = 0
        context = _context(model)
        by_values: dict[tuple[int, int], _Caches] = {}
        # one pair of initializers per distinct table: q and k of every layer share theirs
        by_content: dict[tuple[str, bytes, bytes], tuple[ir.Value, ir.Value, ir.Value]] = {}
        # a candidate negates a Slice (rotate_half's second half); other Negs are not rotaries
        for neg in [n for n in graph if is_onnx_op(n, "Neg") and _negates_a_slice(n)]:
            where = neg.name or neg.outputs[0].name
            try:
                found = _match(neg, graph)
                if context is None:
                    raise NoMatch("the context length is unknown (no hone.generate metadata)")
                key = (id(found.cos), id(found.sin))
                if key not in by_values:
                    by_values[key] = _caches(model, found, context)
            except NoMatch as reason:
                self.missed.append(f"rotary at {where}: {reason}")
                continue
            computed = by_values[key]
            content = (str(computed.positions.name), computed.cos.tobytes(), computed.sin.tobytes())
            if content not in by_content:
                by_content[content] = (
                    computed.positions,
                    add_constant(graph, computed.cos, f"{where}_cos_cache"),
                    add_constant(graph, computed.sin, f"{where}_sin_cache"),
                )
            _replace(graph, found, *by_content[content])
            self.matched += 1
        if self.matched:
            ir.passes.common.RemoveUnusedNodesPass()(model)
            model.opset_imports.setdefault(MS_DOMAIN, 1)
        return ir.passes.PassResult(model, modified=self.matched > 0)


def _negates_a_slice(neg: ir.Node) -> bool:
    source = neg.inputs[0].producer() if neg.inputs and neg.inputs[0] is not None else None
    return source is not None and is_onnx_op(source, "Slice")


def _context(model: ir.Model) -> int | None:
    text = model.metadata_props.get(LAYOUT_KEY)
    return DecoderLayout.from_json(text).max_context if text else None


def _match(neg: ir.Node, graph: ir.Graph) -> _Rotary:
    outputs = set(graph.outputs)
    second = neg.inputs[0].producer() if neg.inputs[0] is not None else None
    concat = _only_user(neg.outputs[0], outputs, "Concat")
    if second is None or not is_onnx_op(second, "Slice"):
        raise NoMatch("the negated half is not a Slice")
    if len(concat.inputs) != 2 or concat.inputs[0] is not neg.outputs[0]:
        raise NoMatch("the Concat is not [-x2, x1]")
    first = concat.inputs[1].producer() if concat.inputs[1] is not None else None
    if first is None or not is_onnx_op(first, "Slice") or first.inputs[0] is not second.inputs[0]:
        raise NoMatch("the two halves are not slices of one tensor")
    x = second.inputs[0]
    assert x is not None
    head_size = x.shape[-1] if x.shape is not None and len(x.shape) == 4 else None
    if not isinstance(head_size, int) or head_size % 2:
        raise NoMatch("the rotated tensor is not 4-D with an even, known head size")
    if int_attribute(concat, "axis", None) not in (-1, 3):
        raise NoMatch("the halves are not joined on the last axis")
    half = head_size // 2
    if _slice(first) != (0, half) or _slice(second) != (half, head_size):
        raise NoMatch(f"the slices are not [0, {half}) and [{half}, {head_size}) of the last axis")
    times_sin = _only_user(concat.outputs[0], outputs, "Mul")
    sin = _other(times_sin, concat.outputs[0])
    add = _only_user(times_sin.outputs[0], outputs, "Add")
    times_cos = _other(add, times_sin.outputs[0]).producer()
    if times_cos is None or not is_onnx_op(times_cos, "Mul") or x not in times_cos.inputs:
        raise NoMatch("the rotated half is not added to x * cos")
    _single_use(times_cos.outputs[0], outputs)
    return _Rotary(x, _other(times_cos, x), sin, add.outputs[0])


def _caches(model: ir.Model, found: _Rotary, context: int) -> _Caches:
    """cos and sin for positions 0 .. context-1, run by onnxruntime on the graph's own nodes."""
    import onnxruntime as ort

    nodes, leaves = _ancestors([found.cos, found.sin])
    inputs = [v for v in leaves if v.is_graph_input()]
    if len(inputs) != 1 or inputs[0].dtype not in (ir.DataType.INT64, ir.DataType.INT32):
        raise NoMatch("cos and sin are not computed from one integer input (the positions)")
    positions, dtype = inputs[0], found.x.dtype
    if dtype is None or positions.dtype is None:
        raise NoMatch("the rotated tensor or the positions have no known type")
    if positions.shape is None or len(positions.shape) != 2:
        raise NoMatch(f"the positions {positions.name} are not (batch, sequence)")
    proto = onnx.helper.make_model(
        onnx.helper.make_graph(
            [ir.serde.serialize_node(n) for n in nodes],
            "rotary_caches",
            [onnx.helper.make_tensor_value_info(positions.name, positions.dtype.value, ["b", "s"])],
            [onnx.helper.make_tensor_value_info(v.name, dtype.value, None) for v in (found.cos, found.sin)],
            initializer=[
                ir.serde.serialize_tensor(v.const_value) for v in leaves if v.const_value is not None
            ],
        ),
        opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in model.opset_imports.items()],
        ir_version=model.ir_version,
    )
    row = np.arange(context, dtype=positions.dtype.numpy())
    feed = {positions.name: np.stack([row, row[::-1]])}
    try:
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        cos, sin = session.run(None, feed)
    except Exception as exc:
        raise NoMatch(f"cos and sin could not be computed alone ({type(exc).__name__})") from exc
    head_size = found.x.shape[-1]  # type: ignore[index]
    if cos.shape != (2, 1, context, head_size) or sin.shape != cos.shape:
        raise NoMatch(f"cos is {list(cos.shape)} for positions (2, {context}), not (2, 1, {context}, D)")
    half = head_size // 2
    for table in (cos, sin):
        if not np.array_equal(table[..., :half], table[..., half:]):
            raise NoMatch("cos and sin are not in rotate_half form (two equal halves)")
        if not np.array_equal(table[0, 0], table[1, 0, ::-1]):
            raise NoMatch("cos and sin depend on more than each token's position")
    return _Caches(
        positions, np.ascontiguousarray(cos[0, 0, :, :half]), np.ascontiguousarray(sin[0, 0, :, :half])
    )


def _ancestors(values: list[ir.Value]) -> tuple[list[ir.Node], list[ir.Value]]:
    """The nodes computing ``values`` in graph order, and the leaves they read (inputs, constants)."""
    seen: set[int] = set()
    found: list[ir.Node] = []
    leaves: dict[int, ir.Value] = {}
    stack = list(values)
    while stack:
        value = stack.pop()
        node = value.producer()
        if node is None:
            leaves[id(value)] = value
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        found.append(node)
        stack.extend(v for v in node.inputs if v is not None)
    graph_order = {id(n): i for i, n in enumerate(values[0].producer().graph or [])}  # type: ignore[union-attr]
    return sorted(found, key=lambda n: graph_order.get(id(n), 0)), list(leaves.values())


def _replace(graph: ir.Graph, found: _Rotary, positions: ir.Value, cos: ir.Value, sin: ir.Value) -> None:
    x, output, attributes = found.x, found.output, {"interleaved": 0}
    partial = _partial(found, set(graph.outputs))
    if partial is not None:  # the op rotates the first rotary_dim of each head, passes the rest
        x, output, rotary_dim = partial
        attributes["rotary_embedding_dim"] = rotary_dim
    anchor = output.producer()
    assert anchor is not None and x.shape is not None
    name = anchor.name or output.name or "rotary"
    split = _head_split(x)
    if split is not None:  # rotate the (B, S, N*D) source, then split the heads as before
        attributes["num_heads"] = split[2]
    elif partial is not None:
        attributes["num_heads"] = int(x.shape[1])  # type: ignore[arg-type]
    rotary = ir.node(
        "RotaryEmbedding",
        [x if split is None else split[0], positions, cos, sin],
        attributes=attributes,
        domain=MS_DOMAIN,
        name=f"{name}_rotary",
    )
    new_nodes = [rotary]
    if split is not None:
        reshape = ir.node("Reshape", [rotary.outputs[0], split[1]], name=f"{name}_rotary_heads")
        transpose = ir.node(
            "Transpose", [reshape.outputs[0]], attributes={"perm": [0, 2, 1, 3]}, name=f"{name}_rotary_bnsh"
        )
        new_nodes += [reshape, transpose]
    result = new_nodes[-1].outputs[0]
    result.shape = output.shape
    if output.dtype is not None:
        result.dtype = output.dtype
    ir.convenience.replace_nodes_and_values(graph, anchor, [anchor], new_nodes, [output], [result])


def _partial(found: _Rotary, outputs: set[ir.Value]) -> tuple[ir.Value, ir.Value, int] | None:
    """(whole, output, rotary_dim) when the rotary is Phi's partial one:
    ``Concat(rotary(Slice(whole, 0, r)), Slice(whole, r, D))`` on the last axis, else None."""
    head = found.x.producer()
    if head is None or not is_onnx_op(head, "Slice") or head.inputs[0] is None:
        return None
    whole = head.inputs[0]
    full = whole.shape[-1] if whole.shape is not None and len(whole.shape) == 4 else None
    rotary_dim = found.x.shape[-1] if found.x.shape is not None else None
    if not isinstance(full, int) or not isinstance(rotary_dim, int) or _slice(head) != (0, rotary_dim):
        return None
    uses = found.output.uses()
    if found.output in outputs or len(uses) != 1 or not is_onnx_op(next(iter(uses)).node, "Concat"):
        return None
    concat = next(iter(uses)).node
    rest = concat.inputs[1].producer() if len(concat.inputs) == 2 and concat.inputs[1] is not None else None
    if concat.inputs[0] is not found.output or int_attribute(concat, "axis", None) not in (-1, 3):
        return None
    if (
        rest is None
        or not is_onnx_op(rest, "Slice")
        or rest.inputs[0] is not whole
        or _slice(rest) != (rotary_dim, full)
    ):
        return None
    return whole, concat.outputs[0], rotary_dim


def _head_split(x: ir.Value) -> tuple[ir.Value, ir.Value, int] | None:
    """(x3, the Reshape target, N) when ``x = Transpose[0,2,1,3](Reshape(x3, [0, 0, N, D]))``."""
    transpose = x.producer()
    if transpose is None or not is_onnx_op(transpose, "Transpose"):
        return None
    perm = transpose.attributes.get("perm")
    reshape = transpose.inputs[0].producer() if transpose.inputs[0] is not None else None
    if (
        perm is None
        or tuple(perm.as_ints()) != (0, 2, 1, 3)
        or reshape is None
        or not is_onnx_op(reshape, "Reshape")
    ):
        return None
    x3, target = reshape.inputs[0], reshape.inputs[1]
    tensor = ir.convenience.get_const_tensor(target) if target is not None else None
    if x3 is None or target is None or tensor is None or x3.shape is None or len(x3.shape) != 3:
        return None
    dims = [int(d) for d in tensor.numpy().reshape(-1)]
    if len(dims) != 4 or dims[:2] != [0, 0] or min(dims[2:]) < 1:
        return None
    return x3, target, dims[2]


def _slice(node: ir.Node) -> tuple[int, int] | None:
    """(start, end) of a Slice of the last axis with step 1, ends past the axis clipped, else None."""
    inputs = list(node.inputs) + [None] * (5 - len(node.inputs))
    starts, ends, axes, steps = (_ints(v) for v in inputs[1:5])
    rank = len(node.inputs[0].shape) if node.inputs[0] is not None and node.inputs[0].shape is not None else 4
    last = (
        node.inputs[0].shape[-1] if node.inputs[0] is not None and node.inputs[0].shape is not None else None
    )
    if starts is None or ends is None or len(starts) != 1 or not isinstance(last, int):
        return None
    if (axes is not None and axes not in ([-1], [rank - 1])) or (steps is not None and steps != [1]):
        return None
    if axes is None and rank != 1:
        return None
    return max(starts[0], 0), min(ends[0], last)


def _ints(value: ir.Value | None) -> list[int] | None:
    """The integers ``value`` holds when they are known before run time: a constant, or a small
    computation on static dims (``Unsqueeze(Div(Gather(Shape(x), 3), 2))`` is how the TorchScript
    export spells D/2)."""
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    if tensor is not None:
        return [int(v) for v in tensor.numpy().reshape(-1)]
    node = value.producer()
    if node is None or node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type in ("Unsqueeze", "Squeeze", "Cast", "Identity", "Reshape"):
        return _ints(node.inputs[0])
    if node.op_type == "Shape" and node.inputs[0] is not None and node.inputs[0].shape is not None:
        dims = list(node.inputs[0].shape)
        start = node.attributes.get("start")
        end = node.attributes.get("end")
        dims = dims[start.as_int() if start else 0 : end.as_int() if end else None]
        static = [d for d in dims if isinstance(d, int)]
        return static if len(static) == len(dims) else None
    if node.op_type == "Gather" and node.inputs[0] is not None:
        shape_node = node.inputs[0].producer()
        if shape_node is None or not is_onnx_op(shape_node, "Shape") or shape_node.attributes:
            return None  # only the plain Shape (no start/end) of a value with static dims there
        index, data = _ints(node.inputs[1]), shape_node.inputs[0]
        if index is None or len(index) != 1 or data is None or data.shape is None:
            return None
        dim = data.shape[index[0]]
        return [int(dim)] if isinstance(dim, int) else None
    if node.op_type in ("Div", "Mul", "Add", "Sub"):
        a, b = _ints(node.inputs[0]), _ints(node.inputs[1])
        if a is None or b is None or len(a) != 1 or len(b) != 1:
            return None
        ops = {
            "Div": lambda p, q: p // q if q else None,
            "Mul": int.__mul__,
            "Add": int.__add__,
            "Sub": int.__sub__,
        }
        result = ops[node.op_type](a[0], b[0])
        return None if result is None else [int(result)]
    return None


def _other(node: ir.Node, value: ir.Value) -> ir.Value:
    if len(node.inputs) != 2 or value not in node.inputs:
        raise NoMatch(f"{node.op_type} {node.name} is not binary on {value.name}")
    other = node.inputs[1] if node.inputs[0] is value else node.inputs[0]
    assert other is not None
    return other


def _only_user(value: ir.Value, outputs: set[ir.Value], op_type: str) -> ir.Node:
    _single_use(value, outputs)
    user = next(iter(value.uses())).node
    if not is_onnx_op(user, op_type):
        raise NoMatch(f"{value.name} goes to {user.op_type}, not {op_type}")
    return user


def _single_use(value: ir.Value, outputs: set[ir.Value]) -> None:
    if value in outputs or len(value.uses()) != 1:
        raise NoMatch(f"{value.name} is used outside the rotary pattern")
