"""``hone profile``: where the time goes and why.

measure (onnxruntime's profiler, median per executed node) -> attribute executed nodes to the
user's nodes -> cost them (FLOPs from the user's nodes, bytes from the shapes onnxruntime ran)
-> classify against the machine's measured roofs -> group by op type -> recommend.

Costs use the shapes of the run: the cost model gets the input shapes the profile fed, and where
shape inference cannot follow a value (a Reshape to a shape computed from data, an If whose
branches differ, a custom op) one more run on the same inputs exposes those values and reports
their shapes, so a Conv or MatMul behind them is costed at what actually ran.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable

import numpy as np
import onnx_ir as ir
from onnx import helper

from hone.errors import HoneError
from hone.machine import MachineCeilings, ceilings
from hone.model import Model
from hone.profile.attribute import attribute
from hone.profile.cost import ModelCost, RunShape, model_cost
from hone.profile.ort_trace import RawProfile, collect
from hone.profile.recommend import recommend
from hone.profile.roofline import Roofline, classify, dominant_bound
from hone.profile.types import OUTSIDE_NODES_ROW, Bound, NodeProfile, OpTypeRow, ProfileResult
from hone.runtime import Session, SessionConfig, default_threads

logger = logging.getLogger(__name__)

SEED = 0  # of the synthesized inputs the profile runs (and costs its shapes at)


def profile(
    model: Model,
    *,
    batch: int = 1,
    threads: int | None = None,
    provider: str = "cpu",
    optimization: str = "all",
    runs: int = 20,
    warmup_runs: int = 3,
    machine: MachineCeilings | None = None,
) -> ProfileResult:
    threads = threads or default_threads()
    named = _with_unique_node_names(model)
    raw = collect(
        named,
        batch=batch,
        threads=threads,
        provider=provider,
        optimization=optimization,
        runs=runs,
        warmup_runs=warmup_runs,
        seed=SEED,
    )
    roofs = machine or ceilings(threads)
    roof = Roofline(roofs.gemm_gflops, roofs.memory_gbps)
    original = ir.to_proto(named.ir)
    costs = _run_costs(named, batch, threads)
    attribution = attribute(
        original,
        raw.optimized_graph,
        [node.name for node in raw.executed],
        {node.name: node.op_type for node in raw.executed},
    )
    by_name = {node.name: node for node in costs.nodes}
    op_of = {node.name: node.op_type for node in original.graph.node}

    nodes: list[NodeProfile] = []
    total_ms = raw.run_ms if raw.run_ms > 0 else raw.nodes_ms
    for executed in raw.executed:
        covers = attribution.covered.get(executed.name, [])
        covered_costs = [by_name[name] for name in covers if name in by_name]
        flops = sum(c.flops for c in covered_costs)
        macs = sum(c.macs for c in covered_costs)
        group_weights = sum(c.weight_bytes for c in covered_costs)
        if executed.bytes_moved:
            # Add the weights onnxruntime prepacked and left out of its shapes (Gemm's B).
            bytes_moved = executed.bytes_moved + max(group_weights - executed.weight_bytes, 0)
        else:
            bytes_moved = sum(c.bytes for c in covered_costs)
        placement = classify(executed.op_type, flops, bytes_moved, executed.time_ms, roof)
        covered_ops = "+".join(_unique(op_of.get(name, "?") for name in covers)) or executed.op_type
        nodes.append(
            NodeProfile(
                name=executed.name,
                op_type=executed.op_type,
                covers=covers,
                covered_ops=covered_ops,
                provider=executed.provider,
                time_ms=executed.time_ms,
                share=executed.time_ms / total_ms if total_ms else 0.0,
                macs=macs,
                flops=flops,
                bytes=bytes_moved,
                bound=placement.bound,
                achieved_gflops=placement.achieved_gflops,
                achieved_gbps=placement.achieved_gbps,
                roof_pct=placement.roof_pct,
                unknown_cost=any(not c.known for c in covered_costs),
            )
        )
    times: list[tuple[Bound, float]] = [(node.bound, node.time_ms) for node in nodes]
    times.append(("overhead", raw.outside_nodes_ms))
    shares = _bound_shares(times, total_ms)
    result = ProfileResult(
        model=model.name,
        provider=provider,
        batch=batch,
        threads=threads,
        optimization=optimization,
        dims=dict(named.default_dims),
        runs=raw.runs,
        total_ms=total_ms,
        nodes_ms=raw.nodes_ms,
        outside_nodes_ms=raw.outside_nodes_ms,
        total_macs=costs.total_macs,
        total_flops=costs.total_flops,
        total_bytes=costs.total_bytes,
        ceilings=roofs,
        bound=dominant_bound(times),
        bound_shares=shares,
        nodes=nodes,
        by_op_type=_group(nodes, raw, total_ms),
        removed_by_runtime=attribution.removed,
        unknown_ops=dict(costs.unknown_ops),
        trace_events=_trace(raw, nodes),
    )
    result.recommendations = recommend(result, original)
    return result


def _profile_feeds(model: Model, batch: int) -> dict[str, np.ndarray]:
    """The inputs ``ort_trace.collect`` feeds at ``seed=SEED`` (the model's samples, else invented ones):
    the same call, so the costs are at the shapes (and, for data-dependent shapes, the values) the
    profile ran. Change both together."""
    from hone.data import feeds

    return feeds(model, batch=batch, seed=SEED)


def _run_costs(model: Model, batch: int, threads: int) -> ModelCost:
    """The cost model at the shapes the profile ran: the inputs ``collect`` fed, and, for values
    shape inference left unknown, their shapes from one more run on those inputs."""
    feeds = _profile_feeds(model, batch)
    input_shapes = {name: tuple(array.shape) for name, array in feeds.items()}
    costs = model_cost(model, batch=batch, dims=model.default_dims, input_shapes=input_shapes)
    if not costs.unknown_values:
        return costs
    try:
        observed = _run_shapes(model, feeds, costs.unknown_values, threads)
    except HoneError as exc:  # the profile itself ran; only the extra outputs failed
        logger.warning(
            "could not run %s for the shapes inference missed (%s); %d values stay unknown",
            model.name,
            exc,
            len(costs.unknown_values),
        )
        return costs
    logger.info(
        "shapes of %d values of %s from a run (shape inference could not follow them)",
        len(observed),
        model.name,
    )
    return model_cost(
        model, batch=batch, dims=model.default_dims, input_shapes=input_shapes, run_shapes=observed
    )


def _run_shapes(
    model: Model, feeds: dict[str, np.ndarray], names: list[str], threads: int
) -> dict[str, RunShape]:
    """Element type and shape of the main-graph values ``names`` in one run of ``model`` on ``feeds``."""
    copied = ir.from_proto(ir.to_proto(model.ir))
    produced = {value.name: value for node in copied.graph for value in node.outputs}
    exposed = [name for name in names if name in produced]
    outputs = {value.name for value in copied.graph.outputs}
    copied.graph.outputs.extend(produced[name] for name in exposed if name not in outputs)
    session = Session(
        model.with_graph(copied, "expose values for their shapes"),
        SessionConfig(threads=threads, optimization="disabled"),
    )
    arrays = dict(zip(session.output_names, session.run(feeds), strict=False))
    shapes: dict[str, RunShape] = {}
    for name in exposed:
        array = np.asarray(arrays.get(name))
        try:
            shapes[name] = (helper.np_dtype_to_tensor_dtype(array.dtype), tuple(array.shape))
        except (KeyError, TypeError):  # strings, sequences: no fixed-size tensor type to cost
            logger.info(
                "value %s of %s has no tensor type (%s); its shape stays unknown",
                name,
                model.name,
                array.dtype,
            )
    return shapes


def _with_unique_node_names(model: Model) -> Model:
    names = Counter(node.name for node in model.ir.graph)
    if all(name and count == 1 for name, count in names.items()):
        return model
    seen: set[str] = set()
    for index, node in enumerate(model.ir.graph):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)
    logger.info("gave every node of %s a unique name for profiling", model.name)
    return model.with_graph(model.ir, "name nodes for profiling")


def _unique(items: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def _bound_shares(times: list[tuple[Bound, float]], total_ms: float) -> dict[Bound, float]:
    shares: dict[Bound, float] = defaultdict(float)
    for bound, time_ms in times:
        shares[bound] += time_ms / total_ms if total_ms else 0.0
    return dict(shares)


def _group(nodes: list[NodeProfile], raw: RawProfile, total_ms: float) -> list[OpTypeRow]:
    groups: dict[str, list[NodeProfile]] = defaultdict(list)
    for node in nodes:
        groups[node.covered_ops].append(node)
    rows = [
        OpTypeRow(
            op_type=op_type,
            nodes=len(members),
            time_ms=sum(m.time_ms for m in members),
            share=sum(m.time_ms for m in members) / total_ms if total_ms else 0.0,
            flops=sum(m.flops for m in members),
            bytes=sum(m.bytes for m in members),
            bound=dominant_bound((m.bound, m.time_ms) for m in members),
        )
        for op_type, members in groups.items()
    ]
    if raw.outside_nodes_ms > 0:
        rows.append(
            OpTypeRow(
                OUTSIDE_NODES_ROW,
                0,
                raw.outside_nodes_ms,
                raw.outside_nodes_ms / total_ms if total_ms else 0.0,
                0,
                0,
                "overhead",
            )
        )
    return sorted(rows, key=lambda row: row.time_ms, reverse=True)


def _trace(raw: RawProfile, nodes: list[NodeProfile]) -> list[dict[str, object]]:
    """The last measured run as Chrome-trace events, with hone's classification in each args."""
    by_name = {node.name: node for node in nodes}
    events: list[dict[str, object]] = []
    for event in raw.trace_events:
        copy = {k: v for k, v in event.items() if k != "args"}
        args = dict(event.get("args", {}) or {})
        args.pop("thread_scheduling_stats", None)
        name = str(event.get("name", "")).removesuffix("_kernel_time")
        node = by_name.get(name)
        if node is not None:
            copy["name"] = f"{node.covered_ops} {name}"
            args.update(
                hone_bound=node.bound,
                hone_flops=node.flops,
                hone_bytes=node.bytes,
                hone_roof_pct=round(node.roof_pct, 2),
                hone_covers=node.covers,
            )
        copy["args"] = args
        events.append(copy)
    return events


__all__ = ["profile"]
