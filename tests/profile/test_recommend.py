"""hone profile's recommendations name only what hone does: every pass they name is one of hone's."""

from __future__ import annotations

import re

from onnx import helper

from hone.machine import MachineCeilings
from hone.passes import TARGETS, default_passes
from hone.profile.recommend import recommend
from hone.profile.types import Bound, NodeProfile, ProfileResult

MACHINE = MachineCeilings(
    gemm_gflops=100.0,
    memory_gbps=20.0,
    threads=1,
    cpu="test",
    measured_at="2025-01-01T00:00:00",
    gemm_size=512,
    method="test",
)
SNAKE_CASE = re.compile(r"\b[a-z]+(?:_[a-z]+)+\b")


def _node(name: str, op_type: str, bound: Bound, share: float) -> NodeProfile:
    return NodeProfile(
        name=name,
        op_type=op_type,
        covers=[name],
        covered_ops=op_type,
        provider="CPUExecutionProvider",
        time_ms=100 * share,
        share=share,
        macs=0,
        flops=0,
        bytes=0,
        bound=bound,
        achieved_gflops=0.0,
        achieved_gbps=0.0,
        roof_pct=0.0,
    )


def _graph_firing_every_rule():
    """A graph and a profile that every rule of ``recommend`` fires on."""
    ops = [
        ("Conv", ["x", "w"], ["c"]),
        ("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn"]),
        ("Erf", ["bn"], ["e"]),
        ("ReduceMean", ["e"], ["r1"]),
        ("Pow", ["r1", "two"], ["p"]),
        ("ReduceMean", ["p"], ["r2"]),
        ("Sqrt", ["r2"], ["q"]),
        ("MatMul", ["q", "k"], ["scores"]),
        ("Softmax", ["scores"], ["probs"]),
        ("MatMul", ["probs", "v2"], ["y"]),
    ]
    nodes = [helper.make_node(op, inputs, outputs, name=outputs[0]) for op, inputs, outputs in ops]
    model = helper.make_model(helper.make_graph(nodes, "every_rule", [], []))
    profiled = [
        _node("bn", "BatchNormalization", "memory", 0.05),
        *(_node(f"add{i}", "Add", "memory", 0.01) for i in range(3)),
        *(_node(f"shape{i}", "Shape", "overhead", 0.01) for i in range(5)),
        _node("copy", "MemcpyToHost", "transfer", 0.03),
        _node("y", "MatMul", "compute", 0.5),
    ]
    result = ProfileResult(
        model="every_rule",
        provider="cpu",
        batch=1,
        threads=1,
        optimization="all",
        dims={},
        runs=1,
        total_ms=100.0,
        nodes_ms=80.0,
        outside_nodes_ms=20.0,
        total_macs=0,
        total_flops=0,
        total_bytes=0,
        ceilings=MACHINE,
        bound="compute",
        bound_shares={"compute": 0.5, "memory": 0.3, "overhead": 0.2},
        nodes=profiled,
        unknown_ops={"Hardmax": 1},
    )
    return result, model


def test_every_rule_fires_on_a_profile_made_for_it() -> None:
    result, model = _graph_firing_every_rule()
    findings = [r.finding for r in recommend(result, model)]
    assert len(findings) == 11, findings


def test_every_pass_a_recommendation_names_is_one_of_hones_passes() -> None:
    result, model = _graph_firing_every_rule()
    known = {p.name for target in TARGETS for p in default_passes(target)}
    named = {word for r in recommend(result, model) for word in SNAKE_CASE.findall(r.action)}
    assert named, "no recommendation named a pass"
    assert named <= known, f"recommended passes hone does not have: {sorted(named - known)}"
    assert {"fuse_conv_bn", "fuse_transformer", "fuse_attention"} <= named


def test_no_recommendation_promises_io_binding() -> None:
    result, model = _graph_firing_every_rule()
    assert not any("IO binding" in r.action for r in recommend(result, model))
