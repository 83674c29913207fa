"""Split an ONNX graph into contiguous blocks at single-tensor boundaries, for pipeline stages.

A pipeline stage is a contiguous run of blocks, and between two stages exactly one tensor is sent.
``onnx_blocks`` finds every place in the main graph (in its topological order) where that holds,
``stage_model`` turns a run of blocks into a standalone ONNX model, and ``measure_block_ms`` times
each block in onnxruntime on the tensors the block before it really produced.

The cut rule: a cut after compute node ``i`` is valid when exactly one tensor is live across it,
i.e. produced at or before ``i`` (or a graph input) and consumed after ``i`` (graph outputs count
as consumed at the end), when that tensor is not itself a graph output, and when shape inference
knows its element type (a stage input must be typed). What never counts as live:

- initializers: each stage carries the ones its nodes use;
- outputs of ``Constant`` nodes: a Constant node is copied into every block that reads it, so it
  never crosses a cut (its index then appears in several blocks' ``node_indices``);
- nothing is hidden in subgraphs: an If/Loop/Scan node counts as reading every outer-scope value
  its subgraphs reference.

A graph with no valid cut is one block.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir

from hone.errors import InputError, InvalidModelError, OptionError
from hone.model import Model
from hone.runtime import Session, SessionConfig
from hone.specs import TensorSpec

logger = logging.getLogger(__name__)

# Initializers with more elements than this are left out of the copy given to shape inference
# (declared as typed graph inputs instead): inference needs their shapes, not their values.
_INFERENCE_MAX_INITIALIZER_ELEMENTS = 1024


@dataclass(frozen=True)
class OnnxBlock:
    """A contiguous run of main-graph nodes that reads one tensor and writes one tensor.

    The first block reads the graph inputs, the last one writes the graph outputs.
    """

    name: str
    node_indices: tuple[int, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    params: int


@dataclass
class _GraphAnalysis:
    """What the cut search found about one model, kept to build stages without redoing it."""

    model: Model
    proto: onnx.ModelProto
    # Element type and shape of every tensor shape inference knows (graph inputs/outputs included).
    value_types: dict[str, onnx.ValueInfoProto]
    # Per main-graph node: the names it reads, outer-scope references of its subgraphs included.
    node_reads: list[frozenset[str]]
    blocks: list[OnnxBlock]


def onnx_blocks(model: Model) -> list[OnnxBlock]:
    """Blocks between every single-tensor cut point of the main graph (topological order)."""
    return _analyze(model).blocks


def stage_model(model: Model, blocks: Sequence[OnnxBlock]) -> onnx.ModelProto:
    """A standalone model for a contiguous run of blocks.

    Its inputs are the first block's ``input_names``, its outputs the last block's
    ``output_names``; it holds only the initializers its nodes use and the source's opset imports,
    and passes ``onnx.checker.check_model(full_check=True)`` where shapes allow.
    """
    return _build_stage(_analyze(model), blocks)


def measure_block_ms(
    model: Model,
    blocks: Sequence[OnnxBlock],
    feeds: Mapping[str, np.ndarray],
    *,
    threads: int = 1,
    runs: int = 5,
) -> list[tuple[float, int]]:
    """Per block: (median forward ms over ``runs`` after one warm-up, bytes of its output tensors).

    Each block runs as its own ``stage_model`` in a hone Session with ``threads`` intra-op threads,
    on the real tensors the previous block produced from ``feeds`` (which hold the first block's
    inputs). ``blocks`` must be a contiguous run of ``onnx_blocks(model)``.
    """
    if runs < 1:
        raise OptionError(f"runs must be at least 1, got {runs}")
    config = SessionConfig(threads=threads)
    analysis = _analyze(model)
    _check_contiguous(analysis, blocks)
    missing = [name for name in blocks[0].input_names if name not in feeds]
    if missing:
        raise InputError(
            f"feeds lack the inputs of block {blocks[0].name!r}: {', '.join(missing)}; give a value "
            "for each of them",
            missing=missing,
        )
    current: dict[str, np.ndarray] = dict(feeds)
    measured: list[tuple[float, int]] = []
    for block in blocks:
        stage = _as_model(model, _build_stage(analysis, [block]), block)
        session = Session(stage, config)
        outputs = session.run(current)  # warm-up, and the tensors the next block reads
        times_ms = []
        for _ in range(runs):
            start = time.perf_counter()
            session.run(current)
            times_ms.append((time.perf_counter() - start) * 1e3)
        output_bytes = sum(int(array.nbytes) for array in outputs)
        median_ms = statistics.median(times_ms)
        logger.debug("block %s: %.3f ms, %d output bytes", block.name, median_ms, output_bytes)
        measured.append((median_ms, output_bytes))
        current = dict(zip(session.output_names, outputs, strict=True))
    return measured


# -- analysis -----------------------------------------------------------------------------------


def _analyze(model: Model) -> _GraphAnalysis:
    proto = ir.to_proto(model.ir)
    graph = proto.graph
    initializer_names = {t.name for t in graph.initializer} | {
        t.values.name for t in graph.sparse_initializer
    }
    graph_inputs = [v.name for v in graph.input if v.name not in initializer_names]
    graph_outputs = [v.name for v in graph.output]
    node_reads = [frozenset(_node_reads(node)) for node in graph.node]
    _check_topological(model, graph, node_reads, set(graph_inputs) | initializer_names)

    constant_nodes = {i for i, node in enumerate(graph.node) if _is_constant(node)}
    constant_producer = {name: i for i in constant_nodes for name in graph.node[i].output if name}
    compute = [i for i in range(len(graph.node)) if i not in constant_nodes]
    value_types = _value_types(proto)

    cuts = _valid_cuts(
        graph,
        compute,
        node_reads,
        graph_inputs,
        graph_outputs,
        ignored=initializer_names | set(constant_producer),
        typed=set(value_types),
    )
    initializer_elements = {t.name: _elements(t.dims) for t in graph.initializer}
    initializer_elements.update({t.values.name: _elements(t.dims) for t in graph.sparse_initializer})
    blocks = _make_blocks(
        graph,
        compute,
        cuts,
        node_reads,
        constant_producer,
        graph_inputs,
        graph_outputs,
        initializer_elements,
    )
    logger.debug("%s: %d blocks at cuts %s", model.name, len(blocks), cuts)
    return _GraphAnalysis(model, proto, value_types, node_reads, blocks)


def _is_constant(node: onnx.NodeProto) -> bool:
    return node.op_type == "Constant" and node.domain in ("", "ai.onnx")


def _node_reads(node: onnx.NodeProto) -> set[str]:
    """Names a node reads: its inputs and the outer-scope names its subgraphs reference."""
    reads = {name for name in node.input if name}
    for subgraph in _subgraphs(node):
        reads |= _outer_references(subgraph)
    return reads


def _subgraphs(node: onnx.NodeProto) -> Iterable[onnx.GraphProto]:
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.g
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            yield from attribute.graphs


def _outer_references(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph (nested ones included) reads but does not define itself."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.values.name for t in graph.sparse_initializer}
    used: set[str] = set()
    for node in graph.node:
        used |= _node_reads(node)
        defined |= set(node.output)
    used |= {v.name for v in graph.output}
    return used - defined - {""}


def _check_topological(
    model: Model,
    graph: onnx.GraphProto,
    node_reads: Sequence[frozenset[str]],
    available: set[str],
) -> None:
    known = set(available)
    for index, node in enumerate(graph.node):
        unknown = sorted(node_reads[index] - known)
        if unknown:
            raise InvalidModelError(
                f"{model.name}: node {index} ({node.op_type} {node.name!r}) reads {unknown[0]!r} "
                "before any node produces it; sort the graph topologically (onnx_ir "
                "graph.sort()) or re-export the model",
                model=model.name,
                node=index,
            )
        known |= {name for name in node.output if name}


def _value_types(proto: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Types shape inference knows for the main graph's tensors, from a copy without big weights."""
    source = proto.graph
    graph = onnx.GraphProto(name=source.name)
    graph.node.extend(source.node)
    graph.input.extend(source.input)
    graph.output.extend(source.output)
    graph.value_info.extend(source.value_info)
    declared = {v.name for v in source.input}
    for tensor in source.initializer:
        small = _elements(tensor.dims) <= _INFERENCE_MAX_INITIALIZER_ELEMENTS
        if small and tensor.data_location != onnx.TensorProto.EXTERNAL:
            graph.initializer.append(tensor)
        elif tensor.name not in declared:
            graph.input.append(
                onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
            )
    graph.sparse_initializer.extend(source.sparse_initializer)
    skeleton = onnx.ModelProto(
        ir_version=proto.ir_version,
        opset_import=proto.opset_import,
        functions=proto.functions,
        graph=graph,
    )
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, data_prop=True).graph
    except Exception as exc:  # noqa: BLE001 - onnx raises InferenceError, ValidationError or RuntimeError
        logger.warning("shape inference failed (%s); only typed graph values can be cut at", exc)
        inferred = graph
    types: dict[str, onnx.ValueInfoProto] = {}
    for value in [*inferred.value_info, *source.input, *source.output]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types[value.name] = value
    return types


def _valid_cuts(
    graph: onnx.GraphProto,
    compute: Sequence[int],
    node_reads: Sequence[frozenset[str]],
    graph_inputs: Sequence[str],
    graph_outputs: Sequence[str],
    *,
    ignored: set[str],
    typed: set[str],
) -> list[tuple[int, str]]:
    """(compute position, boundary tensor) of every valid cut, a cut after that position."""
    count = len(compute)
    if count < 2:
        return []
    defined_at: dict[str, int] = {name: -1 for name in graph_inputs}
    last_read_at: dict[str, int] = {}
    for position, index in enumerate(compute):
        for name in node_reads[index]:
            if name not in ignored:
                last_read_at[name] = position
        for name in graph.node[index].output:
            if name:
                defined_at.setdefault(name, position)
    for name in graph_outputs:
        last_read_at[name] = count
    # Live tensors per cut, as difference arrays: how many, and the sum of their ids (which is the
    # id of the one live tensor where exactly one is).
    names = sorted(defined_at)
    live = [0] * count
    id_sum = [0] * count
    for tensor_id, name in enumerate(names):
        first = max(defined_at[name], 0)
        last = min(last_read_at.get(name, defined_at[name]) - 1, count - 2)
        if first <= last:
            live[first] += 1
            live[last + 1] -= 1
            id_sum[first] += tensor_id
            id_sum[last + 1] -= tensor_id
    cuts: list[tuple[int, str]] = []
    live_now = id_now = 0
    outputs = set(graph_outputs)
    for position in range(count - 1):
        live_now += live[position]
        id_now += id_sum[position]
        if live_now != 1:
            continue
        boundary = names[id_now]
        if boundary in outputs:
            continue
        if boundary not in typed:
            logger.debug("no cut at %r: shape inference does not know its type", boundary)
            continue
        cuts.append((position, boundary))
    return cuts


def _make_blocks(
    graph: onnx.GraphProto,
    compute: Sequence[int],
    cuts: Sequence[tuple[int, str]],
    node_reads: Sequence[frozenset[str]],
    constant_producer: Mapping[str, int],
    graph_inputs: Sequence[str],
    graph_outputs: Sequence[str],
    initializer_elements: Mapping[str, int],
) -> list[OnnxBlock]:
    ends = [position for position, _ in cuts] + [len(compute) - 1]
    boundaries = [name for _, name in cuts]
    blocks: list[OnnxBlock] = []
    start = 0
    for number, end in enumerate(ends):
        own = list(compute[start : end + 1])
        reads = set().union(*(node_reads[i] for i in own))
        last = number == len(ends) - 1
        if last:
            reads |= set(graph_outputs)
        constants = {constant_producer[name] for name in reads if name in constant_producer}
        if last:  # Constant nodes nobody reads go with the last block, so no node is lost
            used_anywhere = set().union(*node_reads) | set(graph_outputs)
            constants |= {
                i
                for i in set(constant_producer.values())
                if not any(name in used_anywhere for name in graph.node[i].output)
            }
        blocks.append(
            OnnxBlock(
                name=_block_name(graph, own, constants),
                node_indices=tuple(sorted({*own, *constants})),
                input_names=tuple(graph_inputs) if number == 0 else (boundaries[number - 1],),
                output_names=tuple(graph_outputs) if last else (boundaries[number],),
                params=sum(
                    initializer_elements[name]
                    for name in set().union(*(node_reads[i] for i in own))
                    if name in initializer_elements
                ),
            )
        )
        start = end + 1
    return blocks


def _block_name(graph: onnx.GraphProto, own: Sequence[int], constants: set[int]) -> str:
    if not own:
        return f"constants only ({len(constants)} nodes)"
    first, last = own[0], own[-1]
    if first == last:
        return f"node {first} ({graph.node[first].op_type})"
    return f"nodes {first}-{last} ({graph.node[first].op_type}..{graph.node[last].op_type})"


def _elements(dims: Iterable[int]) -> int:
    total = 1
    for dim in dims:
        total *= int(dim)
    return total


# -- stage models -------------------------------------------------------------------------------


def _check_contiguous(analysis: _GraphAnalysis, blocks: Sequence[OnnxBlock]) -> None:
    all_blocks = analysis.blocks
    if not blocks:
        raise OptionError("no blocks given; pass a contiguous run of onnx_blocks(model)")
    try:
        start = all_blocks.index(blocks[0])
    except ValueError:
        raise OptionError(
            f"block {blocks[0].name!r} is not one of onnx_blocks({analysis.model.name}); pass "
            "blocks computed from this model",
            block=blocks[0].name,
        ) from None
    if list(blocks) != all_blocks[start : start + len(blocks)]:
        raise OptionError(
            f"blocks starting at {blocks[0].name!r} are not a contiguous run of "
            f"onnx_blocks({analysis.model.name}); pass consecutive blocks in order",
            block=blocks[0].name,
        )


def _build_stage(analysis: _GraphAnalysis, blocks: Sequence[OnnxBlock]) -> onnx.ModelProto:
    _check_contiguous(analysis, blocks)
    source = analysis.proto.graph
    node_indices = sorted({i for block in blocks for i in block.node_indices})
    input_names = blocks[0].input_names
    output_names = blocks[-1].output_names
    reads = set().union(*(analysis.node_reads[i] for i in node_indices)) | set(output_names)
    produced = {name for i in node_indices for name in source.node[i].output if name}

    source_inputs = {v.name: v for v in source.input}
    source_outputs = {v.name: v for v in source.output}
    graph = onnx.GraphProto(name=f"{source.name or analysis.model.name} {_run_name(blocks)}")
    graph.node.extend(source.node[i] for i in node_indices)
    graph.input.extend(_declared(analysis, source_inputs, name) for name in input_names)
    graph.output.extend(_declared(analysis, source_outputs, name) for name in output_names)
    graph.initializer.extend(
        _in_memory(analysis.model, tensor) for tensor in source.initializer if tensor.name in reads
    )
    graph.sparse_initializer.extend(t for t in source.sparse_initializer if t.values.name in reads)
    boundary = set(input_names) | set(output_names)
    graph.value_info.extend(v for v in source.value_info if v.name in produced and v.name not in boundary)
    stage = onnx.ModelProto(
        ir_version=analysis.proto.ir_version,
        opset_import=analysis.proto.opset_import,
        functions=analysis.proto.functions,
        producer_name="hone",
        graph=graph,
    )
    return stage


def _run_name(blocks: Sequence[OnnxBlock]) -> str:
    return blocks[0].name if len(blocks) == 1 else f"{blocks[0].name} to {blocks[-1].name}"


def _declared(
    analysis: _GraphAnalysis, source: Mapping[str, onnx.ValueInfoProto], name: str
) -> onnx.ValueInfoProto:
    """The source graph's declaration of ``name``, else the type shape inference found for it."""
    if name in source:
        return source[name]
    known = analysis.value_types.get(name)
    if known is None:  # the cut search only cuts at typed tensors
        raise InvalidModelError(
            f"shape inference does not know the type of {name!r}; annotate it in value_info",
            tensor=name,
        )
    return known


def _in_memory(model: Model, tensor: onnx.TensorProto) -> onnx.TensorProto:
    """``tensor`` with its data inside the proto (external data read from the model's files)."""
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return tensor
    value = model.ir.graph.initializers[tensor.name].const_value
    assert value is not None, "an initializer always has a value"
    return ir.serde.serialize_tensor(ir.Tensor(value.numpy(), dtype=value.dtype, name=tensor.name))


def _as_model(model: Model, stage: onnx.ModelProto, block: OnnxBlock) -> Model:
    stage_ir = ir.from_proto(stage)
    return Model(
        ir=stage_ir,
        name=f"{model.name} {block.name}",
        source=model.source,
        source_kind=model.source_kind,
        inputs=_specs(stage_ir.graph.inputs),
        outputs=_specs(stage_ir.graph.outputs),
        default_dims=dict(model.default_dims),
    )


def _specs(values: Sequence[ir.Value]) -> tuple[TensorSpec, ...]:
    specs = []
    for value in values:
        shape = tuple(dim if isinstance(dim, int) else dim.value for dim in (value.shape or ()))
        dtype = value.dtype.numpy().name if value.dtype is not None else "float32"
        specs.append(TensorSpec(name=value.name or "", dtype=dtype, shape=shape))
    return tuple(specs)
