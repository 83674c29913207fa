"""Attention fusion for onnxruntime targets: the spelled-out multi-head attention of a BERT-style
layer -> one com.microsoft ``Attention`` (packed QKV projection) or ``MultiHeadAttention`` node.

The pattern, from the Softmax outwards (B batch, S/T query/key length, H heads, D head size)::

    q4 = Transpose[0,2,1,3](Reshape(q, [0, 0, H, D]))          # q: (B, S, H*D)
    kT = Transpose[0,2,3,1](Reshape(k, [0, 0, H, D]))          # kT: (B, H, D, T)
    v4 = Transpose[0,2,1,3](Reshape(v, [0, 0, H, D]))
    scores = MatMul(q4 * c1, kT * c2) * c3  [or / c3]         # any of c1, c2, c3 may be absent
    p = Softmax(scores + bias, axis=-1)                        # bias (B|1, H|1, S, T) optional
    p = Where(IsNaN(p), 0, p)                                  # optional (PyTorch's SDPA export)
    out = Reshape(Transpose[0,2,1,3](MatMul(p, v4)), [0, 0, H*D])

It covers both exports of the same model: the eager one (scale after the MatMul) and the SDPA
one (sqrt of the scale on q and on kT, plus the NaN guard for fully masked rows).

A decoder with a KV cache (``hone export --target generate``) spells it with the heads already
split: the keys and values are 4-D (B, H, T, D) -- the cache ``Concat(past, new)``, repeated per
query head for grouped-query attention -- and the key enters as ``Transpose[0,1,3,2](k4)``; the
query may come out of a rotary embedding rather than straight from its head split. Then the
result is ``MultiHeadAttention(q, k4, v4, attention_bias=bias)`` with 4-D (BNSH) key and value, the
query merged back to (B, S, H*D) when it is not a head split. The cache concatenation stays
outside, so the graph's ``present.*`` outputs are untouched. Not ``GroupQueryAttention``: on
onnxruntime's CPU it refuses a batch of more than one row with new tokens over a past ("batch_size
must be 1 when sequence_length > 1 and past context is given", onnxruntime 1.32), which is the
step continuous batching runs when a sequence joins; and not MultiHeadAttention's own past inputs,
which need as many key heads as query heads. The result is
``out = Attention(x, [Wq|Wk|Wv], [bq|bk|bv], attention_bias=bias, num_heads=H, scale=c1*c2*c3)``
when q, k and v are ``x @ W + b`` of one ``x`` with constant weights, else
``MultiHeadAttention(q, k, v, attention_bias=bias)``. The NaN guard, when present, is kept as
``Where(IsNaN(out), 0, out)``: a fully masked row (all of its bias -inf) makes the fused kernel's
softmax NaN as it did the original's, and the original then contributed zeros for that row.

Written here rather than taken from onnxscript's ``ort_fusions``: its SDPA and MHA rules expect
the graphs of PyTorch's dynamo exporter and match neither TorchScript export above (the split
scale and NaN guard of the SDPA export, the eager export's layout). Reshape targets must be
constant: run ``simplify_shapes`` first. Leaves alone (reported as missed, with the reason):
Softmax not on the last axis, intermediate values used outside the pattern, head sizes that do
not divide the hidden size, non-scalar scales, a bias that is not 4-D, 4-D keys or values whose
head count or size is not a known number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from hone.passes.base import HonePass
from hone.passes.graph import MS_DOMAIN, add_constant, infer_shapes, is_onnx_op, last_static_dim, scalar_of


class NoMatch(Exception):
    """Why a Softmax is not the centre of a fusable attention (the text goes into ``missed``)."""


@dataclass
class _Attention:
    """One matched attention: the values it reads and the nodes it replaces."""

    q: ir.Value  # (B, S, H*D), or (B, H, S, D) when ``merge_query``
    k: ir.Value  # (B, T, H*D), or (B, H, T, D) when ``kv_bnsh``
    v: ir.Value
    bias: ir.Value | None
    num_heads: int
    scale: float
    nan_guard: bool
    output: ir.Value  # the (B, S, H*D) value the fused node produces
    nodes: list[ir.Node]
    head_size: int = 0
    merge_query: bool = False  # q is 4-D: transposed and reshaped to (B, S, H*D) first
    kv_bnsh: bool = False  # k and v are 4-D (B, H, T, D), as a KV cache holds them


class FuseAttentionPass(HonePass):
    name = "fuse_attention"
    targets = ("ort-cpu", "ort-cuda")

    def rewrite(self, model: ir.Model) -> ir.passes.PassResult:
        infer_shapes(model)  # ranks and hidden sizes for the checks
        graph = model.graph
        self.matched = 0
        for softmax in [n for n in graph if is_onnx_op(n, "Softmax")]:
            try:
                found = match_attention(softmax, graph)
            except NoMatch as reason:
                self.missed.append(f"attention at {softmax.name or softmax.outputs[0].name}: {reason}")
                continue
            _replace(graph, found)
            self.matched += 1
        if self.matched:
            ir.passes.common.RemoveUnusedNodesPass()(model)
            model.opset_imports.setdefault(MS_DOMAIN, 1)
        return ir.passes.PassResult(model, modified=self.matched > 0)


def match_attention(softmax: ir.Node, graph: ir.Graph) -> _Attention:
    """The attention around ``softmax``, or NoMatch saying which part is not there."""
    nodes: list[ir.Node] = [softmax]
    outputs = set(graph.outputs)
    if _int_attr(softmax, "axis", -1) not in (-1, _rank(softmax.inputs[0], default=0) - 1):
        raise NoMatch("Softmax is not over the last axis")

    # Output side: [IsNaN/Where guard] -> MatMul with v -> Transpose -> Reshape to (B, S, H*D).
    probs, nan_guard = softmax.outputs[0], False
    users = _users(probs)
    if len(users) == 2 and {u.op_type for u in users} == {"IsNaN", "Where"}:
        isnan = next(u for u in users if u.op_type == "IsNaN")
        where = next(u for u in users if u.op_type == "Where")
        if (
            where.inputs[0] is not isnan.outputs[0]
            or where.inputs[2] is not probs
            or not _is_scalar(where.inputs[1], 0.0)
        ):
            raise NoMatch("the Softmax output is used by a Where that is not a NaN guard")
        nodes += [isnan, where]
        probs, nan_guard = where.outputs[0], True
    context_matmul = _only_user(probs, "MatMul", outputs, "the attention probabilities")
    if context_matmul.inputs[0] is not probs:
        raise NoMatch("the probabilities are the second MatMul operand")
    transpose_out = _only_user(context_matmul.outputs[0], "Transpose", outputs, "the attention context")
    _expect_perm(transpose_out, (0, 2, 1, 3), "context transpose")
    merge = _only_user(transpose_out.outputs[0], "Reshape", outputs, "the transposed context")
    nodes += [context_matmul, transpose_out, merge]
    v, v_nodes, heads, head_size_v, v_bnsh = _keys_or_values(
        _operand(context_matmul, 1), (0, 2, 1, 3), outputs, "value"
    )
    nodes += v_nodes
    merged = _const_ints(_operand(merge, 1), "context reshape target")
    if (
        len(merged) != 3
        or merged[2] not in (heads * head_size_v, -1)
        or any(d not in (0, -1) for d in merged[:2])
    ):
        raise NoMatch(f"context reshape target {merged} is not [0, 0, H*D]")

    # Input side: [Add bias] <- [scale] <- MatMul(q4 [*c1], kT [*c2]).
    scores, bias = _operand(softmax, 0), None
    add = scores.producer()
    if add is not None and is_onnx_op(add, "Add"):
        left, right = _operand(add, 0), _operand(add, 1)
        for candidate, other in ((left, right), (right, left)):
            if _reaches_matmul(candidate):
                scores, bias = candidate, other
                break
        else:
            raise NoMatch("the Softmax input is an Add with no QK^T MatMul behind it")
        _check_single_use(add.outputs[0], outputs, "the masked scores")
        nodes.append(add)
        if _rank(bias, default=-1) != 4:
            raise NoMatch("the attention bias is not known to be 4-D (B|1, H|1, S, T)")
    scale, scores, scale_nodes = _strip_scales(scores, outputs)
    nodes += scale_nodes
    qk = scores.producer()
    if qk is None or qk.op_type != "MatMul":
        raise NoMatch("no QK^T MatMul before the Softmax")
    _check_single_use(qk.outputs[0], outputs, "the attention scores")
    nodes.append(qk)
    q_scale, q4, q_scale_nodes = _strip_scales(_operand(qk, 0), outputs)
    k_scale, kT, k_scale_nodes = _strip_scales(_operand(qk, 1), outputs)
    nodes += q_scale_nodes + k_scale_nodes
    q, q_nodes, q_heads, head_size, merge_query = _query(q4, outputs)
    k, k_nodes, k_heads, k_head_size, k_bnsh = _keys_or_values(kT, (0, 2, 3, 1), outputs, "key")
    nodes += q_nodes + k_nodes
    if not q_heads == k_heads == heads or head_size != k_head_size or head_size != head_size_v:
        raise NoMatch("query, key and value disagree on heads or head size")
    if k_bnsh != v_bnsh:
        raise NoMatch("the key and the value are not in the same layout (one head-split, one 4-D)")
    return _Attention(
        q, k, v, bias, heads, scale * q_scale * k_scale, nan_guard, merge.outputs[0], nodes,
        head_size=head_size, merge_query=merge_query, kv_bnsh=k_bnsh,
    )  # fmt: skip


def _query(q4: ir.Value, outputs: set[ir.Value]) -> tuple[ir.Value, list[ir.Node], int, int, bool]:
    """The query as (value, nodes, H, D, merge): its head split's source, else q4 itself (to be
    merged back to (B, S, H*D)) when q4 is 4-D with static H and D -- the output of a rotary
    embedding, say."""
    try:
        return (*_split_heads(q4, (0, 2, 1, 3), outputs, "query"), False)
    except NoMatch as reason:
        heads, head_size = _static_heads(q4)
        if heads is None or head_size is None:
            raise NoMatch(f"{reason}, nor a (B, H, S, D) value with static H and D") from None
        return q4, [], heads, head_size, True


def _keys_or_values(
    value: ir.Value, perm: tuple[int, ...], outputs: set[ir.Value], role: str
) -> tuple[ir.Value, list[ir.Node], int, int, bool]:
    """Keys (``value`` is what the QK MatMul reads) or values as (source, nodes, H, D, bnsh): a head
    split's (B, T, H*D) source, else a 4-D (B, H, T, D) tensor -- a KV cache -- with static H and D
    (keys behind ``Transpose[0,1,3,2]``)."""
    try:
        return (*_split_heads(value, perm, outputs, role), False)
    except NoMatch as reason:
        nodes: list[ir.Node] = []
        source = value
        if role == "key":
            transpose = value.producer()
            attribute = transpose.attributes.get("perm") if transpose is not None else None
            if transpose is None or attribute is None or tuple(attribute.as_ints()) != (0, 1, 3, 2):
                raise
            _check_single_use(transpose.outputs[0], outputs, "the transposed keys")
            source, nodes = _operand(transpose, 0), [transpose]
        heads, head_size = _static_heads(source)
        if heads is None or head_size is None:
            raise NoMatch(f"{reason}, nor a (B, H, T, D) {role} with static H and D") from None
        return source, nodes, heads, head_size, True


def _static_heads(value: ir.Value) -> tuple[int | None, int | None]:
    """(H, D) of a 4-D (B, H, S, D) value when both are known numbers, else Nones."""
    shape = value.shape
    if shape is None or len(shape) != 4:
        return None, None
    heads, head_size = shape[1], shape[3]
    return (heads if isinstance(heads, int) else None), (head_size if isinstance(head_size, int) else None)


def _split_heads(
    value: ir.Value, perm: tuple[int, ...], outputs: set[ir.Value], role: str
) -> tuple[ir.Value, list[ir.Node], int, int]:
    """``Transpose[perm](Reshape(x, [0, 0, H, D]))`` -> (x, nodes, H, D)."""
    transpose = value.producer()
    if transpose is None or transpose.op_type != "Transpose":
        raise NoMatch(f"the {role} is not a head-split Transpose")
    _expect_perm(transpose, perm, f"{role} transpose")
    _check_single_use(transpose.outputs[0], outputs, f"the {role} heads")
    reshape = _operand(transpose, 0).producer()
    if reshape is None or reshape.op_type != "Reshape":
        raise NoMatch(f"the {role} heads do not come from a Reshape")
    _check_single_use(reshape.outputs[0], outputs, f"the split {role}")
    source = _operand(reshape, 0)
    target = _const_ints(_operand(reshape, 1), f"{role} reshape target (run simplify_shapes first)")
    hidden = last_static_dim(source)
    if hidden is None and len(target) == 4 and min(target[2:]) > 0:
        hidden = target[2] * target[3]
    if len(target) != 4 or _rank(source, default=-1) != 3 or hidden is None:
        raise NoMatch(f"the {role} reshape {target} is not (B, S, H*D) -> (B, S, H, D) with a static H*D")
    # Batch and sequence are copied (0); one of them may be -1 only when H and D are static.
    if any(d not in (0, -1) for d in target[:2]) or (-1 in target[:2] and min(target[2:]) < 1):
        raise NoMatch(f"the {role} reshape {target} does not keep batch and sequence")
    heads, head_size = target[2], target[3]
    if heads == -1 and head_size > 0 and hidden % head_size == 0:
        heads = hidden // head_size
    if head_size == -1 and heads > 0 and hidden % heads == 0:
        head_size = hidden // heads
    if heads < 1 or head_size < 1 or heads * head_size != hidden:
        raise NoMatch(f"the {role} reshape {target} does not split {hidden} into heads")
    return source, [transpose, reshape], heads, head_size


def _strip_scales(value: ir.Value, outputs: set[ir.Value]) -> tuple[float, ir.Value, list[ir.Node]]:
    """Peel ``Mul(x, c)`` / ``Div(x, c)`` by scalar constants off ``value``: (product, x, nodes)."""
    scale = 1.0
    nodes: list[ir.Node] = []
    while (node := value.producer()) is not None and is_onnx_op(node, "Mul", "Div"):
        constant = scalar_of(node.inputs[1])
        operand = node.inputs[0]
        if constant is None and node.op_type == "Mul":
            constant, operand = scalar_of(node.inputs[0]), node.inputs[1]
        if constant is None or constant == 0.0 or operand is None:
            break
        _check_single_use(node.outputs[0], outputs, "a scaled attention operand")
        scale *= constant if node.op_type == "Mul" else 1.0 / constant
        nodes.append(node)
        value = operand
    return scale, value, nodes


def _reaches_matmul(value: ir.Value) -> bool:
    _, stripped, _ = _strip_scales(value, set())
    producer = stripped.producer()
    return producer is not None and producer.op_type == "MatMul"


def _replace(graph: ir.Graph, found: _Attention) -> None:
    anchor = found.output.producer()
    assert anchor is not None
    packed = None if found.merge_query or found.kv_bnsh else _packed_projection(found, graph)
    merge_nodes: list[ir.Node] = []
    if packed is not None:
        x, weight, bias = packed
        inputs = [x, weight, bias, None, None, found.bias]
        op_type = "Attention"
    else:
        query = found.q
        if found.merge_query:
            merge_nodes = _merged_heads(graph, found, anchor.name or found.output.name or "attention")
            query = merge_nodes[-1].outputs[0]
        inputs = [query, found.k, found.v, None, None, found.bias]
        op_type = "MultiHeadAttention"
    while inputs and inputs[-1] is None:
        inputs.pop()
    fused = ir.node(
        op_type,
        inputs,
        domain=MS_DOMAIN,
        num_outputs=1,
        name=f"{anchor.name or found.output.name}_fused",
        attributes={"num_heads": found.num_heads, "scale": float(found.scale)},
    )
    dtype = found.output.dtype or found.q.dtype or ir.DataType.FLOAT
    new_nodes = [*merge_nodes, fused]
    result = fused.outputs[0]
    if found.nan_guard:
        isnan = ir.node("IsNaN", [result], name=f"{fused.name}_isnan")
        zero = add_constant(graph, np.zeros((), dtype=dtype.numpy()), f"{fused.name}_zero")
        where = ir.node("Where", [isnan.outputs[0], zero, result], name=f"{fused.name}_nan_to_zero")
        new_nodes += [isnan, where]
        result = where.outputs[0]
    # The last new value takes over the old output's name, uses and place among graph outputs.
    ir.convenience.replace_nodes_and_values(graph, anchor, [anchor], new_nodes, [found.output], [result])


def _merged_heads(graph: ir.Graph, found: _Attention, name: str) -> list[ir.Node]:
    """Transpose[0,2,1,3] + Reshape [0, 0, H*D]: a 4-D (B, H, S, D) query as MultiHeadAttention's
    (B, S, H*D)."""
    transpose = ir.node("Transpose", [found.q], attributes={"perm": [0, 2, 1, 3]}, name=f"{name}_q_bshd")
    target = add_constant(
        graph, np.array([0, 0, found.num_heads * found.head_size], dtype=np.int64), f"{name}_q_merged_shape"
    )
    reshape = ir.node("Reshape", [transpose.outputs[0], target], name=f"{name}_q_merged")
    return [transpose, reshape]


def _packed_projection(found: _Attention, graph: ir.Graph) -> tuple[ir.Value, ir.Value, ir.Value] | None:
    """(x, [Wq|Wk|Wv], [bq|bk|bv]) when q, k, v are ``x @ W + b`` of one x with constants, else None.
    The packed weight and bias become initializers of ``graph`` (the graph the attention is in)."""
    parts = [part for value in (found.q, found.k, found.v) if (part := _projection(value)) is not None]
    if len(parts) != 3 or len({id(part[0]) for part in parts}) != 1:
        return None
    x = parts[0][0]
    weights = [part[1] for part in parts]
    biases = [part[2] for part in parts]
    if len({w.shape[0] for w in weights}) != 1:
        return None
    weight = add_constant(graph, np.concatenate(weights, axis=1), f"{found.output.name}_qkv_weight")
    bias = add_constant(graph, np.concatenate(biases), f"{found.output.name}_qkv_bias")
    return x, weight, bias


def _projection(value: ir.Value) -> tuple[ir.Value, np.ndarray, np.ndarray] | None:
    """(x, W, b) when ``value = Add(MatMul(x, W), b)`` (either Add order) with constant 2-D W, 1-D b."""
    add = value.producer()
    if add is None or add.op_type != "Add" or len(value.uses()) != 1:
        return None
    for matmul_out, bias in ((add.inputs[0], add.inputs[1]), (add.inputs[1], add.inputs[0])):
        if matmul_out is None:
            continue
        matmul = matmul_out.producer()
        if matmul is None or matmul.op_type != "MatMul" or len(matmul_out.uses()) != 1:
            continue
        x, weight_value = matmul.inputs[0], matmul.inputs[1]
        if x is None or weight_value is None or bias is None:
            continue
        weight = ir.convenience.get_const_tensor(weight_value)
        bias_tensor = ir.convenience.get_const_tensor(bias)
        if weight is None or bias_tensor is None:
            continue
        w, b = weight.numpy(), bias_tensor.numpy()
        if w.ndim == 2 and b.ndim == 1 and b.shape[0] == w.shape[1]:
            return x, w, b
    return None


def _operand(node: ir.Node, index: int) -> ir.Value:
    """Input ``index`` of ``node``; NoMatch when the node has no such input."""
    value = node.inputs[index] if index < len(node.inputs) else None
    if value is None:
        raise NoMatch(f"{node.op_type} {node.name or ''} has no input {index}")
    return value


def _users(value: ir.Value) -> list[ir.Node]:
    return list(dict.fromkeys(node for node, _ in value.uses()))


def _only_user(value: ir.Value, op_type: str, outputs: set[ir.Value], what: str) -> ir.Node:
    _check_single_use(value, outputs, what)
    user = next(iter(value.uses())).node
    if not is_onnx_op(user, op_type):
        raise NoMatch(f"{what} go to {user.op_type}, not {op_type}")
    return user


def _check_single_use(value: ir.Value, outputs: set[ir.Value], what: str) -> None:
    if value in outputs or len(value.uses()) != 1:
        raise NoMatch(f"{what} are used outside the attention pattern")


def _expect_perm(node: ir.Node, perm: tuple[int, ...], what: str) -> None:
    attribute = node.attributes.get("perm")
    if attribute is None or tuple(attribute.as_ints()) != perm:
        raise NoMatch(f"{what} is not perm={list(perm)}")


def _const_ints(value: ir.Value, what: str) -> list[int]:
    tensor = ir.convenience.get_const_tensor(value)
    if tensor is None:
        raise NoMatch(f"the {what} is computed at run time")
    return [int(d) for d in tensor.numpy().reshape(-1)]


def _is_scalar(value: ir.Value | None, expected: float) -> bool:
    return scalar_of(value) == expected


def _int_attr(node: ir.Node, name: str, default: int) -> int:
    attribute = node.attributes.get(name)
    return attribute.as_int() if attribute is not None else default


def _rank(value: ir.Value | None, *, default: int) -> int:
    return len(value.shape) if value is not None and value.shape is not None else default
