"""Per-layer sensitivity: which quantized layers hurt the answer most, so they can stay float.

How it is measured: the float model and a quantized candidate run on a few calibration batches
with the output of every quantizable node (Conv, MatMul, Gemm, Attention) exposed. A node's
*cumulative* error is the relative L2 distance between the two at its output. Its *local* error
is that minus the worst cumulative error already present at its inputs (followed back through
unquantized nodes such as Relu or Add), i.e. what quantizing this node itself added. Nodes are
ranked by local error; the fallback (``fallback.py``) then keeps the top 1, 2, 4, ... in float
until the budget holds.

This needs the candidate to keep the float tensors' names at those outputs, which dynamic INT8
and fp16 graphs do, and QDQ graphs do in their own way: a quantized output ``v`` is read as
``v_DequantizeLinear_Output`` (what the next layer sees), and a Relu or Clip right after a node is
removed (the uint8 range clamps instead) with the node taking over the activation's output name,
so such a node is compared at the activation's dequantized output. QOperator graphs rename
everything: rank with QDQ, then apply the same exclusions to QOperator. Written here:
onnxruntime's ``qdq_loss_debug`` reports cumulative errors only, which blame every layer after the
first bad one.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from hone.model import Model
from hone.quantize.types import LayerError
from hone.runtime import Session, SessionConfig


def rank_layers(
    float_model: Model,
    candidate: Model,
    feeds: list[dict[str, np.ndarray]],
    nodes: list[str],
    threads: int | None = None,
) -> list[LayerError]:
    """Quantizable nodes of ``float_model`` named in ``nodes``, worst local error first."""
    by_name = {node.name: node for node in float_model.ir.graph if node.name}
    candidate_values = {v.name for n in candidate.ir.graph for v in n.outputs if v.name is not None}
    compared: dict[str, tuple[str, str]] = {}  # node -> (float value, candidate value) at its output
    for name in nodes:
        pair = _counterpart(by_name[name].outputs[0], candidate_values) if name in by_name else None
        if pair is not None:
            compared[name] = pair
    if not compared:
        return []
    reference = _run_exposing(float_model, sorted({f for f, _ in compared.values()}), feeds, threads)
    produced = _run_exposing(candidate, sorted({c for _, c in compared.values()}), feeds, threads)
    cumulative = {f: _relative_error(reference[f], produced[c]) for f, c in compared.values()}
    errors = []
    for node_name, (value_name, _) in compared.items():
        node = by_name[node_name]
        upstream = max(
            (_upstream_error(v, cumulative, {}) for v in node.inputs if v is not None), default=0.0
        )
        errors.append(
            LayerError(
                node_name, node.op_type, cumulative[value_name], max(cumulative[value_name] - upstream, 0.0)
            )
        )
    return sorted(errors, key=lambda e: e.local, reverse=True)


# What onnxruntime's QDQ quantizer does to names (onnxruntime.quantization.quant_utils).
_DEQUANTIZED_SUFFIX = "_DequantizeLinear_Output"
_REMOVABLE_ACTIVATIONS = ("Relu", "Clip")


def _counterpart(value: ir.Value, candidate_values: set[str]) -> tuple[str, str] | None:
    """(float value, candidate value) that hold the same quantity, from a node's output onwards
    through a Relu/Clip the quantizer may have removed; None when the candidate has neither."""
    while True:
        if value.name is None:
            return None
        for name in (value.name + _DEQUANTIZED_SUFFIX, value.name):
            if name in candidate_values:
                return value.name, name
        uses = list(value.uses())
        if len(uses) != 1 or uses[0][0].op_type not in _REMOVABLE_ACTIVATIONS:
            return None
        value = uses[0][0].outputs[0]


def _upstream_error(value: ir.Value, cumulative: dict[str, float], memo: dict[str | None, float]) -> float:
    """The worst tracked error reaching ``value`` (0 at graph inputs and constants)."""
    if value.name is not None and value.name in cumulative:
        return cumulative[value.name]
    if value.name in memo:
        return memo[value.name]
    memo[value.name] = 0.0  # guards against cycles through odd graphs
    producer = value.producer()
    worst = 0.0
    if producer is not None:
        worst = max(
            (_upstream_error(v, cumulative, memo) for v in producer.inputs if v is not None), default=0.0
        )
    memo[value.name] = worst
    return worst


def _run_exposing(
    model: Model, names: list[str], feeds: list[dict[str, np.ndarray]], threads: int | None
) -> dict[str, np.ndarray]:
    """``run_exposing`` with each value flattened per sample and concatenated over the batches."""
    collected = run_exposing(model, names, feeds, threads)
    return {
        name: np.concatenate([c.reshape(len(c), -1) if c.ndim else c.reshape(1, 1) for c in chunks])
        for name, chunks in collected.items()
    }


def run_exposing(
    model: Model, names: list[str], feeds: list[dict[str, np.ndarray]], threads: int | None
) -> dict[str, list[np.ndarray]]:
    """Run a copy of ``model`` that also outputs the values ``names``; per value, one float32 array per
    batch."""
    copied = ir.from_proto(ir.to_proto(model.ir))
    values = {v.name: v for n in copied.graph for v in n.outputs}
    existing = {v.name for v in copied.graph.outputs}
    graph_inputs = {v.name for v in copied.graph.inputs}  # read from the feeds, not exposed
    for name in names:
        if name not in existing and name not in graph_inputs:
            copied.graph.outputs.append(values[name])
    exposed = model.with_graph(copied, "expose layer outputs")
    session = Session(exposed, SessionConfig(threads=threads, optimization="disabled"))
    positions = {v.name: i for i, v in enumerate(copied.graph.outputs)}
    collected: dict[str, list[np.ndarray]] = {name: [] for name in names}
    dtypes = {spec.name: spec.dtype for spec in model.inputs}  # fp16 models may take float16 inputs
    for batch in feeds:
        outputs = session.run({k: v.astype(dtypes.get(k, v.dtype), copy=False) for k, v in batch.items()})
        for name in names:
            value = (
                batch[name] if name in graph_inputs and name not in positions else outputs[positions[name]]
            )
            collected[name].append(np.asarray(value, dtype=np.float32))
    return collected


def _relative_error(reference: np.ndarray, produced: np.ndarray) -> float:
    norm = float(np.linalg.norm(reference))
    return float(np.linalg.norm(produced - reference)) / max(norm, 1e-12)


def nearest_to_outputs(model: Model, outputs: list[str], limit: int = 16) -> list[str]:
    """Main-graph nodes by their distance (in nodes) from the graph outputs ``outputs``, nearest first.

    The output-aware fallback keeps these float first: when one output fails the gate (a detector's
    packed boxes and scores sharing one INT8 scale), the quantized nodes closest to it (the Concat
    and the Sigmoid before it) are where its precision is lost. Shape plumbing (Reshape, Shape,
    Transpose, ...) is walked through but not listed: keeping it float changes nothing. Unnamed
    nodes are named here, in place (onnxruntime excludes nodes by name only).
    """
    name_nodes(model)
    graph = model.ir.graph
    wanted = [v for v in graph.outputs if v.name in outputs]
    order: list[str] = []
    seen: set[int] = set()
    frontier = [node for node in (v.producer() for v in wanted) if node is not None]
    while frontier and len(order) < limit:
        next_frontier = []
        for node in frontier:
            if id(node) in seen:
                continue
            seen.add(id(node))
            if node.op_type not in _PLUMBING:
                assert node.name is not None  # named by name_nodes above
                order.append(node.name)
            for value in node.inputs:
                producer = value.producer() if value is not None else None
                if producer is not None and producer.graph is graph:
                    next_frontier.append(producer)
        frontier = next_frontier
    return order[:limit]


_PLUMBING = frozenset(
    {
        "Reshape",
        "Shape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Identity",
        "Cast",
        "Constant",
        "Gather",
        "Slice",
        "ConstantOfShape",
        "Expand",
    }
)


def name_nodes(model: Model) -> None:
    """Give every unnamed main-graph node the name ``<op_type>_<index>`` (unique), in place."""
    taken = {node.name for node in model.ir.graph if node.name}
    for index, node in enumerate(model.ir.graph):
        if node.name:
            continue
        name = f"{node.op_type}_{index}"
        while name in taken:
            name += "_"
        node.name = name
        taken.add(name)
