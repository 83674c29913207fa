"""Which of a model's nodes onnxruntime-web's WebGPU provider will run, and which it hands to the CPU.

onnxruntime assigns each node to the first provider in the session's list that has a kernel for
its op, its opset version and its input type; every other node goes to the CPU provider (WASM in
the browser), with a copy between GPU and CPU memory on each side. This check does the same lookup
against the WebGPU provider's kernel table (``webgpu_ops.py``, from onnxruntime's sources for the
pinned onnxruntime-web) before a browser is ever opened, so a user sees what will fall back:

- an op the provider has no kernel for (domain and type);
- an op whose opset version (the schema version the model's opset import selects) is outside the
  versions the provider registers;
- an input type outside the kernel's type constraint (e.g. int64 where only float and int32 are
  registered) when the table knows the constraint and the model's types are inferred.

Ops the provider supports with a known restriction are listed separately, with the restriction.
What this cannot see: onnxruntime also moves small shape computations (int64 Shape/Gather/Concat
chains feeding a Reshape) to the CPU on purpose, and a kernel can refuse an attribute value at
session creation. The browser tests compare this check with the placement onnxruntime-web logs.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import onnx
import onnx_ir as ir

from hone.export import webgpu_ops
from hone.model import Model

logger = logging.getLogger(__name__)


@dataclass
class PlacementGroup:
    """Nodes of one op that share a placement reason."""

    op_type: str
    domain: str  # "" for the ONNX domain
    nodes: int
    reason: str


@dataclass
class PlacementReport:
    """The static placement of a model's nodes on onnxruntime-web's WebGPU provider."""

    ort_web_version: str
    nodes: int
    webgpu_nodes: int
    cpu: list[PlacementGroup] = field(default_factory=list)  # will run on the CPU (WASM) provider
    restricted: list[PlacementGroup] = field(default_factory=list)  # on WebGPU, with a restriction

    @property
    def cpu_nodes(self) -> int:
        return self.nodes - self.webgpu_nodes

    def summary(self) -> str:
        if not self.cpu:
            return (
                f"WebGPU placement: all {self.nodes} nodes have a WebGPU kernel (onnxruntime-web"
                f" {self.ort_web_version})"
            )
        groups = ", ".join(f"{g.op_type} x{g.nodes} ({g.reason})" for g in self.cpu)
        return (
            f"WebGPU placement: {self.cpu_nodes} of {self.nodes} nodes fall back to the CPU (WASM) "
            f"in onnxruntime-web {self.ort_web_version}: {groups}"
        )


def webgpu_placement(model: Model) -> PlacementReport:
    """Check every node of ``model`` (subgraphs included) against the WebGPU provider's kernels."""
    opsets = {_domain(domain): version for domain, version in model.ir.opset_imports.items()}
    cpu: Counter[tuple[str, str, str]] = Counter()
    restricted: Counter[tuple[str, str, str]] = Counter()
    total = 0
    for node in ir.traversal.RecursiveGraphIterator(model.ir.graph):
        total += 1
        domain = _domain(node.domain)
        reason = _cpu_reason(node, domain, opsets.get(domain))
        if reason is not None:
            cpu[(node.op_type, domain, reason)] += 1
        elif (domain, node.op_type) in webgpu_ops.NOTES:
            restricted[(node.op_type, domain, webgpu_ops.NOTES[(domain, node.op_type)])] += 1
    report = PlacementReport(
        ort_web_version=webgpu_ops.ORT_WEB_VERSION,
        nodes=total,
        webgpu_nodes=total - sum(cpu.values()),
        cpu=[
            PlacementGroup(op, domain, count, reason) for (op, domain, reason), count in sorted(cpu.items())
        ],
        restricted=[
            PlacementGroup(op, domain, count, reason)
            for (op, domain, reason), count in sorted(restricted.items())
        ],
    )
    logger.info("%s", report.summary())
    return report


def _domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def _cpu_reason(node: ir.Node, domain: str, opset: int | None) -> str | None:
    """Why ``node`` will not run on WebGPU, or None if it has a kernel there."""
    ranges = webgpu_ops.WEBGPU_KERNELS.get((domain, node.op_type))
    if not ranges:
        return "no WebGPU kernel"
    version = _schema_version(node.op_type, domain, opset)
    if version is not None and not any(low <= version <= (high or version) for low, high in ranges):
        registered = ", ".join(f"{low}-{high}" if high else f"{low}+" for low, high in ranges)
        return f"opset version {version}; WebGPU registers {registered}"
    types = webgpu_ops.WEBGPU_TYPES.get((domain, node.op_type))
    first = node.inputs[0] if node.inputs else None
    if types and first is not None and first.dtype is not None:
        dtype = _onnx_type_name(first.dtype)
        if dtype not in types:
            return f"{dtype} input; WebGPU takes {', '.join(sorted(types))}"
    return None


def _schema_version(op_type: str, domain: str, opset: int | None) -> int | None:
    """The since-version of the op's schema that ``opset`` selects (what onnxruntime matches kernels on)."""
    if opset is None:
        return None
    try:
        return onnx.defs.get_schema(op_type, opset, domain).since_version
    except onnx.defs.SchemaError:  # a contrib op: onnx does not know its schema
        return None


def _onnx_type_name(dtype: ir.DataType) -> str:
    """ONNX's name of an element type as the kernel table spells it: float, float16, int64, bool..."""
    return onnx.helper.tensor_dtype_to_string(int(dtype)).removeprefix("TensorProto.").lower()
