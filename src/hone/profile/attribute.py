"""Map the nodes onnxruntime executed back to the nodes of the model the user gave.

onnxruntime rewrites the graph before running it: Conv+BatchNormalization+Relu becomes one
FusedConv (or an NCHWc Conv named ``<last fused output>_nchwc`` that writes ``reorder_token_N``
tensors, with ReorderInput/ReorderOutput nodes around the NCHWc region), Identity and Dropout vanish,
constant subgraphs fold.
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
# The user's op that an executed (fused) kernel is built around.
_ANCHORS = {"FusedConv": "Conv", "FusedGemm": "Gemm", "FusedMatMul": "MatMul", "NhwcFusedConv": "Conv"}


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
    executed_ops: dict[str, str] | None = None,
) -> Attribution:
    names = list(executed_names)
    original_nodes = list(original.graph.node)
    order = {node.name: index for index, node in enumerate(original_nodes)}
    by_name = {node.name: node for node in original_nodes}
    producer = {output: node for node in original_nodes for output in node.output if output}
    stops = {value.name for value in original.graph.input} | {t.name for t in original.graph.initializer}
    # onnxruntime turns Constant nodes into initializers: their outputs are inputs, not work.
    stops |= {out for node in original_nodes if node.op_type == "Constant" for out in node.output}

    if optimized is None:
        # No rewritten graph to look at: each executed node is the original node of that name.
        alone = {name: [name] for name in names if name in by_name}
        return Attribution(alone, [n.name for n in original_nodes if n.name not in _flatten(alone)])

    optimized_nodes = {node.name: node for node in optimized.graph.node}
    executed_io: dict[str, tuple[set[str], set[str]]] = {}
    for name in names:
        node = optimized_nodes.get(name)
        if node is None:
            continue
        inputs = {_original_tensor(t, producer, stops) for t in node.input if t}
        outputs = {_original_tensor(t, producer, stops) for t in node.output if t}
        if not outputs & producer.keys():
            # NCHWc kernels write "reorder_token_N" tensors but carry the original output's name
            # as their own node name ("<tensor>_nchwc").
            from_name = _original_tensor(name, producer, stops)
            if from_name in producer:
                outputs.add(from_name)
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
    _give_back_absorbed_heads(covered, executed_ops or {}, by_name, producer, order)
    removed = [node.name for node in original_nodes if node.name not in claimed]
    return Attribution(covered, removed)


def _give_back_absorbed_heads(
    covered: dict[str, list[str]],
    executed_ops: dict[str, str],
    by_name: dict[str, onnx.NodeProto],
    producer: dict[str, onnx.NodeProto],
    order: dict[str, int],
) -> None:
    """Fusion only absorbs consumers: nodes of a group that come before its anchor op (the op the
    kernel executes, e.g. Conv for FusedConv or an NCHWc Conv) belong to the executed node that
    produced their input. This happens when a kernel fused a residual Add+Relu ("Sum") but was
    named after an earlier tensor, so the walk back from the next kernel passed through them.
    """
    owner = {name: executed for executed, group in covered.items() for name in group}
    for executed, group in list(covered.items()):
        anchor_op = _ANCHORS.get(executed_ops.get(executed, ""), executed_ops.get(executed, ""))
        anchors = [name for name in group if by_name[name].op_type == anchor_op]
        if not anchors or anchors[0] == group[0]:
            continue
        first = order[anchors[0]]
        heads = [name for name in group if order[name] < first]
        for name in heads:
            previous = next(
                (
                    owner[producer[t].name]
                    for t in by_name[name].input
                    if t in producer and owner.get(producer[t].name) not in (None, executed)
                ),
                None,
            )
            if previous is None:
                continue
            group.remove(name)
            covered[previous].append(name)
            covered[previous].sort(key=lambda n: order.get(n, 0))
            owner[name] = previous


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
