"""The profile's result types, apart from the code that measures them, so that the profiler, the
recommendations, the job and the renderers all import them and not each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from hone.machine import MachineCeilings

# The roofline class of a node (``hone.profile.roofline`` says how each is decided).
Bound = Literal["compute", "memory", "overhead", "transfer", "sync"]

OUTSIDE_NODES_ROW = "(outside nodes)"


@dataclass
class NodeProfile:
    """One executed node: its time, what it covers of the user's graph, its cost and its class."""

    name: str
    op_type: str  # as executed (FusedConv, Conv, MatMul, ...)
    covers: list[str]  # the user's nodes it stands for
    covered_ops: str  # their op types joined, e.g. "Conv+BatchNormalization+Relu"
    provider: str
    time_ms: float
    share: float  # of the total run time
    macs: int
    flops: int
    bytes: int
    bound: Bound
    achieved_gflops: float
    achieved_gbps: float
    roof_pct: float
    unknown_cost: bool = False


@dataclass
class OpTypeRow:
    op_type: str  # the user's op types an executed node covers, e.g. "Conv+BatchNormalization+Relu"
    nodes: int
    time_ms: float
    share: float
    flops: int
    bytes: int
    bound: Bound  # the class holding most of this op type's time


@dataclass
class Recommendation:
    finding: str  # what was measured, with its share and class
    action: str  # what to do about it, as a hone command or pass
    share: float  # of the total run time this finding is about


@dataclass
class ProfileResult:
    model: str
    provider: str
    batch: int
    threads: int
    optimization: str
    dims: dict[str, int]
    runs: int
    total_ms: float  # median run time
    nodes_ms: float  # median of the summed node times
    outside_nodes_ms: float  # total_ms - nodes_ms: session overhead and copies outside any node
    total_macs: int
    total_flops: int
    total_bytes: int
    ceilings: MachineCeilings
    bound: Bound  # whole model: the class holding most of the time
    bound_shares: dict[Bound, float]
    nodes: list[NodeProfile] = field(default_factory=list)
    by_op_type: list[OpTypeRow] = field(default_factory=list)
    removed_by_runtime: list[str] = field(default_factory=list)
    unknown_ops: dict[str, int] = field(default_factory=dict)
    recommendations: list[Recommendation] = field(default_factory=list)
    trace_events: list[dict[str, object]] = field(default_factory=list)
