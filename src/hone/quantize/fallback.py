"""Per-layer sensitivity: which quantized layers hurt the answer most, so they can stay float.

How it is measured: the float model and a quantized candidate run on a few calibration batches
with the output of every quantizable node (Conv, MatMul, Gemm, Attention) exposed. A node's
*cumulative* error is the relative L2 distance between the two at its output. Its *local* error
is that minus the worst cumulative error already present at its inputs (followed back through
unquantized nodes such as Relu or Add), i.e. what quantizing this node itself added. Nodes are
ranked by local error; the gate then keeps the top 1, 2, 4, ... in float until the budget holds.

This needs the candidate to keep the float tensors' names at those outputs, which QDQ, dynamic
INT8 and fp16 graphs do (QOperator graphs rename them: rank with QDQ, then apply the same
exclusions to QOperator). Written here: onnxruntime's ``qdq_loss_debug`` reports cumulative
errors only, which blame every layer after the first bad one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from hone.model import Model
from hone.runtime import Session, SessionConfig


@dataclass
class LayerError:
    node: str
    op_type: str
    cumulative: float  # relative L2 error of this node's output against the float model
    local: float  # what this node added on top of its inputs' error


def rank_layers(float_model: Model, candidate: Model, feeds: list[dict[str, np.ndarray]], nodes: list[str],
                threads: int | None = None) -> list[LayerError]:
    """Quantizable nodes of ``float_model`` named in ``nodes``, worst local error first."""
    by_name = {node.name: node for node in float_model.ir.graph if node.name}
    tracked = {name: by_name[name].outputs[0].name for name in nodes if name in by_name}
    candidate_values = {v.name for n in candidate.ir.graph for v in n.outputs}
    comparable = {node: value for node, value in tracked.items() if value in candidate_values}
    if not comparable:
        return []
    names = sorted(set(comparable.values()))
    reference = _run_exposing(float_model, names, feeds, threads)
    produced = _run_exposing(candidate, names, feeds, threads)
    cumulative = {name: _relative_error(reference[name], produced[name]) for name in names}
    errors = []
    for node_name, value_name in comparable.items():
        node = by_name[node_name]
        upstream = max((_upstream_error(v, cumulative, {}) for v in node.inputs if v is not None), default=0.0)
        errors.append(LayerError(node_name, node.op_type, cumulative[value_name],
                                 max(cumulative[value_name] - upstream, 0.0)))
    return sorted(errors, key=lambda e: e.local, reverse=True)


def _upstream_error(value: ir.Value, cumulative: dict[str, float], memo: dict[str, float]) -> float:
    """The worst tracked error reaching ``value`` (0 at graph inputs and constants)."""
    if value.name in cumulative:
        return cumulative[value.name]
    if value.name in memo:
        return memo[value.name]
    memo[value.name] = 0.0  # guards against cycles through odd graphs
    producer = value.producer()
    worst = 0.0
    if producer is not None:
        worst = max((_upstream_error(v, cumulative, memo) for v in producer.inputs if v is not None), default=0.0)
    memo[value.name] = worst
    return worst


def _run_exposing(model: Model, names: list[str], feeds: list[dict[str, np.ndarray]],
                  threads: int | None) -> dict[str, np.ndarray]:
    """Run a copy of ``model`` that also outputs ``names``; concatenated over the batches, as float32."""
    copied = ir.from_proto(ir.to_proto(model.ir))
    values = {v.name: v for n in copied.graph for v in n.outputs}
    existing = {v.name for v in copied.graph.outputs}
    for name in names:
        if name not in existing:
            copied.graph.outputs.append(values[name])
    exposed = model.with_graph(copied, "expose layer outputs")
    session = Session(exposed, SessionConfig(threads=threads, optimization="disabled"))
    positions = {v.name: i for i, v in enumerate(copied.graph.outputs)}
    collected: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for batch in feeds:
        outputs = session.run(batch)
        for name in names:
            collected[name].append(np.asarray(outputs[positions[name]], dtype=np.float32))
    return {name: np.concatenate([c.reshape(len(c), -1) if c.ndim else c.reshape(1, 1) for c in chunks])
            for name, chunks in collected.items()}


def _relative_error(reference: np.ndarray, produced: np.ndarray) -> float:
    norm = float(np.linalg.norm(reference))
    return float(np.linalg.norm(produced - reference)) / max(norm, 1e-12)
