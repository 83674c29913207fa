"""Index ranges onnxruntime enforces on a served model's integer inputs, checked before batching.

A request whose ids are out of range for a ``Gather`` fails in onnxruntime with INVALID_ARGUMENT,
and it fails the whole batch it ran in, which the batcher then reruns request by request (each
poisoned request costs a batch run plus one run per batch mate: measured 18 valid answers lost per
poisoned request, benchmarks/serve_abuse.py). Where the answer is certain, the server refuses such
a request at admission instead, with the same 400 and no run at all.

Certain means: a main-graph ``Gather`` whose indices are the graph input itself (not computed from
it), whose data has a static size K on the gathered axis, and whose output reaches a graph output
(a dead Gather is dropped by onnxruntime and enforces nothing). onnxruntime then refuses any index
outside [-K, K-1]; that interval, intersected over every such Gather of the input, is the range.
Nothing else is inferred here (hone's ``infer_inputs`` bounds, e.g. from ``Equal``, are hints for
inventing inputs, not rules onnxruntime enforces).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir


@dataclass(frozen=True)
class IndexRange:
    low: int  # inclusive
    high: int  # inclusive
    node: str  # the Gather that sets the tightest bound, for the message


def enforced_index_ranges(model: ir.Model) -> dict[str, IndexRange]:
    """Graph input name -> the index range onnxruntime enforces on it (see the module docstring)."""
    graph = model.graph
    inputs = {value.name: value for value in graph.inputs}
    live = _reaching_outputs(graph)
    ranges: dict[str, IndexRange] = {}
    for node in graph:
        if node.op_type != "Gather" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
            continue
        data, indices = node.inputs[0], node.inputs[1]
        name = None if indices is None else indices.name
        if name is None or inputs.get(name) is not indices or node not in live:
            continue
        size = _axis_size(data, node)
        if size is None:
            continue
        found = IndexRange(-size, size - 1, node.name or "(unnamed)")
        known = ranges.get(name)
        if known is None or found.high < known.high:
            ranges[name] = (
                found if known is None else IndexRange(max(known.low, found.low), found.high, found.node)
            )
    return ranges


def _axis_size(data: ir.Value | None, node: ir.Node) -> int | None:
    if data is None or data.shape is None:
        return None
    attribute = node.attributes.get("axis")
    axis = attribute.as_int() if attribute is not None else 0
    rank = len(data.shape)
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank:
        return None
    dim = data.shape[axis]
    return dim if isinstance(dim, int) and dim > 0 else None


def _reaching_outputs(graph: ir.Graph) -> set[ir.Node]:
    """Main-graph nodes from which some graph output is reachable."""
    live: set[ir.Node] = set()
    stack = [value.producer() for value in graph.outputs]
    while stack:
        node = stack.pop()
        if node is None or node in live:
            continue
        live.add(node)
        stack.extend(value.producer() for value in node.inputs if value is not None)
    return live
