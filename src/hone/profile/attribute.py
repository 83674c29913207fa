"""Map the nodes onnxruntime executed back to the nodes of the model the user gave.

onnxruntime rewrites the graph before running it: Conv+BatchNormalization+Relu becomes one
FusedConv (or an NCHWc Conv named after the last fused output, with ``_nchwc`` tensors and
ReorderInput/ReorderOutput nodes around it), Identity and Dropout vanish, constant subgraphs fold.
An executed node covers the original nodes that lie between its inputs and its outputs: walk
back from the producers of its outputs and stop at any tensor that is an input of the executed
node, a graph input, an initializer, or the output of another executed node. Original nodes no
executed node covers were removed or folded by onnxruntime and took no time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import onnx

_LAYOUT_SUFFIXES = ("_nchwc",)


@dataclass
class Attribution:
    # executed node name -> names of the original nodes it covers, in graph order
    covered: dict[str, list[str]]
    # original nodes that no executed node covers (folded or removed by onnxruntime)
    removed: list[str]


def attribute(
    original: onnx.ModelProto,
    optimized: onnx.ModelProto | None,
    executed_names: Iterable[str],
) -> Attribution:
    names = list(executed_names)
    original_nodes = list(original.graph.node)
    order = {node.name: index for index, node in enumerate(original_nodes)}
    by_name = {node.name: node for node in original_nodes}
    producer = {output: node for node in original_nodes for output in node.output if output}
    stops = {value.name for value in original.graph.input} | {t.name for t in original.graph.initializer}

    if optimized is None:
        # No rewritten graph to look at: each executed node is the original node of that name.
        covered = {name: [name] for name in names if name in by_name}
        return Attribution(covered, [n.name for n in original_nodes if n.name not in _flatten(covered)])

    optimized_nodes = {node.name: node for node in optimized.graph.node}
    executed_io: dict[str, tuple[set[str], set[str]]] = {}
    for name in names:
        node = optimized_nodes.get(name)
        if node is None:
            continue
        inputs = {_original_tensor(t, producer, stops) for t in node.input if t}
        outputs = {_original_tensor(t, producer, stops) for t in node.output if t}
        executed_io[name] = (inputs, outputs)
    boundary = set(stops)
    for _, outputs in executed_io.values():
        boundary |= outputs

    covered: dict[str, list[str]] = {}
    claimed: set[str] = set()
    for name in names:
        if name not in executed_io:
            if name in by_name and name not in claimed:
                covered[name] = [name]
                claimed.add(name)
            continue
        inputs, outputs = executed_io[name]
        group: set[str] = set()
        pending = [producer[t] for t in outputs if t in producer]
        while pending:
            node = pending.pop()
            if node.name in group or node.name in claimed:
                continue
            group.add(node.name)
            for tensor in node.input:
                if not tensor or tensor in inputs or tensor in boundary or tensor not in producer:
                    continue
                pending.append(producer[tensor])
        claimed |= group
        covered[name] = sorted(group, key=lambda n: order.get(n, 0))
    removed = [node.name for node in original_nodes if node.name not in claimed]
    return Attribution(covered, removed)


def _original_tensor(name: str, producer: dict[str, onnx.NodeProto], stops: set[str]) -> str:
    """The original tensor an optimized tensor stands for (layout copies carry a suffix)."""
    if name in producer or name in stops:
        return name
    for suffix in _LAYOUT_SUFFIXES:
        if name.endswith(suffix) and (name[: -len(suffix)] in producer or name[: -len(suffix)] in stops):
            return name[: -len(suffix)]
    return name


def _flatten(covered: dict[str, list[str]]) -> set[str]:
    return {name for group in covered.values() for name in group}
