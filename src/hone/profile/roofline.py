"""Roofline classification: is a node (or the whole model) compute-, memory-, overhead-,
transfer- or sync-bound?

For a node that did ``flops`` work moving ``bytes`` in ``time``, on a machine whose measured
ceilings are ``P`` (FLOP/s, GEMM peak) and ``B`` (bytes/s, stream bandwidth):

- the roofline time is ``t_roof = max(flops / P, bytes / B)``: the least time either roof allows;
- the node is *compute*-bound when ``flops / P >= bytes / B`` (arithmetic intensity at or above
  the ridge point ``P / B``), *memory*-bound otherwise;
- unless it ran far slower than both roofs allow, ``t_roof / time < OVERHEAD_EFFICIENCY``: then
  dispatch, scheduling and small-tensor overhead dominate, and it is *overhead*-bound;
- host/device copies (Memcpy nodes of GPU providers) are *transfer*-bound, and waits that a
  provider reports as synchronization are *sync*-bound, whatever their arithmetic.

``roof_pct`` is the achieved rate as a percentage of the roof that binds the node (GFLOP/s of
the GEMM peak for compute-bound, GB/s of the stream bandwidth for memory-bound).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import get_args

from hone.profile.types import Bound

BOUNDS: tuple[Bound, ...] = get_args(Bound)
# Below this fraction of the roofline rate a node is called overhead-bound.
OVERHEAD_EFFICIENCY = 0.1
_TRANSFER_OPS = ("MemcpyToHost", "MemcpyFromHost", "Memcpy")
_SYNC_MARKERS = ("Sync", "Wait", "Barrier")


@dataclass(frozen=True)
class Roofline:
    gemm_gflops: float
    memory_gbps: float

    @property
    def ridge_flops_per_byte(self) -> float:
        return self.gemm_gflops / self.memory_gbps


@dataclass(frozen=True)
class Placement:
    bound: Bound
    achieved_gflops: float
    achieved_gbps: float
    roof_pct: float  # achieved rate as % of the binding roof (compute or memory)
    efficiency: float  # roofline time / measured time


def classify(op_type: str, flops: int, bytes_moved: int, time_ms: float, roof: Roofline) -> Placement:
    seconds = max(time_ms, 1e-9) / 1000.0
    achieved_gflops = flops / seconds / 1e9
    achieved_gbps = bytes_moved / seconds / 1e9
    compute_s = flops / (roof.gemm_gflops * 1e9)
    memory_s = bytes_moved / (roof.memory_gbps * 1e9)
    roof_s = max(compute_s, memory_s)
    efficiency = roof_s / seconds
    compute_side = compute_s >= memory_s and flops > 0
    roof_pct = 100.0 * (
        achieved_gflops / roof.gemm_gflops if compute_side else achieved_gbps / roof.memory_gbps
    )
    bound: Bound
    if op_type in _TRANSFER_OPS:
        bound = "transfer"
    elif any(marker in op_type for marker in _SYNC_MARKERS):
        bound = "sync"
    elif efficiency < OVERHEAD_EFFICIENCY:
        bound = "overhead"
    else:
        bound = "compute" if compute_side else "memory"
    return Placement(bound, achieved_gflops, achieved_gbps, roof_pct, efficiency)


def dominant_bound(times_by_bound: Iterable[tuple[Bound, float]]) -> Bound:
    """The class holding the most time (ties go to the earlier class in BOUNDS)."""
    totals = {bound: 0.0 for bound in BOUNDS}
    for bound, time_ms in times_by_bound:
        totals[bound] += time_ms
    return max(BOUNDS, key=lambda bound: (totals[bound], -BOUNDS.index(bound)))
