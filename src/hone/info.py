"""What a model is: inputs/outputs with symbolic dims, opsets, nodes by op type, parameters, size."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import onnx_ir as ir

from hone.model import Model
from hone.specs import TensorSpec


@dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: list[int | str | None]


@dataclass
class ModelInfo:
    name: str
    source: str
    source_kind: str
    file_size_bytes: int | None  # the .onnx file plus its external data files, when on disk
    ir_version: int
    opset_imports: dict[str, int]
    producer: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    node_count: int  # every node, including those inside subgraphs
    op_counts: dict[str, int]  # "domain::OpType" for non-default domains, most frequent first
    parameter_count: int  # elements in initializers (weights and buffers such as BN statistics)
    parameter_bytes: int
    external_data_files: list[str] = field(default_factory=list)
    provenance: dict[str, str] = field(default_factory=dict)


def op_counts(model_ir: ir.Model) -> dict[str, int]:
    """Nodes by op type ("domain::OpType" outside the default domain), subgraphs included,
    most frequent first."""
    ops: Counter[str] = Counter()
    for node in ir.traversal.RecursiveGraphIterator(model_ir.graph):
        ops[node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"] += 1
    return dict(ops.most_common())


def describe(model: Model) -> ModelInfo:
    graph = model.ir.graph
    ops = op_counts(model.ir)
    parameter_count = 0
    parameter_bytes = 0
    external_files: set[str] = set()
    for value in graph.initializers.values():
        tensor = value.const_value
        if tensor is None:
            continue
        parameter_count += _elements(tensor.shape)
        parameter_bytes += tensor.nbytes
        if isinstance(tensor, ir.ExternalTensor):
            external_files.add(str(tensor.location))
    file_size = None
    if model.path is not None and model.path.exists():
        file_size = model.path.stat().st_size
        for location in external_files:
            data_file = model.path.parent / location
            if data_file.exists():
                file_size += data_file.stat().st_size
    return ModelInfo(
        name=model.name,
        source=model.source,
        source_kind=model.source_kind,
        file_size_bytes=file_size,
        ir_version=model.ir.ir_version,
        opset_imports=dict(model.ir.opset_imports),
        producer=f"{model.ir.producer_name or ''} {model.ir.producer_version or ''}".strip(),
        inputs=[_tensor_info(s) for s in model.inputs],
        outputs=[_tensor_info(s) for s in model.outputs],
        node_count=sum(ops.values()),
        op_counts=ops,
        parameter_count=parameter_count,
        parameter_bytes=parameter_bytes,
        external_data_files=sorted(external_files),
        provenance=dict(model.provenance),
    )


def _tensor_info(spec: TensorSpec) -> TensorInfo:
    return TensorInfo(spec.name, spec.dtype, list(spec.shape))


def _elements(shape: ir.ShapeProtocol) -> int:
    count = 1
    for dim in shape:
        count *= dim if isinstance(dim, int) else 0
    return count
