"""hone profile costs nodes at the shapes it ran: for inputs whose dims are all symbolic, and for values
shape inference cannot follow (no value_info, data-dependent shapes), from the run itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import hone
from hone.machine import MachineCeilings
from hone.model import Model
from hone.profile import cost as cost_module
from hone.profile import profile
from hone.profile.types import NodeProfile

# Measured roofs do not matter here: only the costs are checked.
MACHINE = MachineCeilings(gemm_gflops=100.0, memory_gbps=20.0, threads=1, cpu="test", measured_at="",
                          gemm_size=0, method="fixed for tests")

ALL_SYMBOLIC = {
    # x (N, C, H, W) -> Conv 3x3, pads 1, 3 -> 4 channels
    "Conv": ("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, C, H, W] x) => (float[N, K, P, Q] y) { y = Conv <pads = [1, 1, 1, 1]> (x, w) }""",
             (4, 3, 3, 3), {"C": 3, "H": 8, "W": 6}, 4 * 8 * 6 * 3 * 9),
    # x (N, S, D) @ w (D, 5)
    "MatMul": ("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, S, D] x) => (float[N, S, E] y) { y = MatMul (x, w) }""",
               (12, 5), {"S": 7, "D": 12}, 7 * 12 * 5),
}


def _model(tmp_path: Path, op: str) -> tuple[Model, int]:
    text, weight_shape, dims, macs = ALL_SYMBOLIC[op]
    proto = onnx.parser.parse_model(text)
    proto.graph.initializer.append(numpy_helper.from_array(np.ones(weight_shape, np.float32), "w"))
    assert not proto.graph.value_info
    path = tmp_path / f"{op}.onnx"
    onnx.save(proto, path)
    model = hone.load(path)
    model.default_dims.update(dims)  # what `--dim C=3 --dim H=8 ...` sets
    return model, macs


def _node(result, op: str) -> NodeProfile:
    return next(n for n in result.nodes if any(name.startswith(op) for name in n.covers))


@pytest.mark.parametrize("op", ["Conv", "MatMul"])
def test_a_node_of_an_all_symbolic_model_is_costed_at_the_profiled_shape(tmp_path: Path, op: str) -> None:
    model, macs = _model(tmp_path, op)
    result = profile(model, batch=2, threads=1, runs=2, warmup_runs=1, machine=MACHINE)
    node = _node(result, op)
    assert node.macs == 2 * macs and node.flops >= 2 * node.macs > 0
    assert not node.unknown_cost and result.unknown_ops == {}


@pytest.mark.parametrize("op", ["Conv", "MatMul"])
def test_without_any_inferred_shape_the_run_supplies_them_and_the_node_is_still_costed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, op: str) -> None:
    monkeypatch.setattr(cost_module, "_infer_shapes", lambda proto: (proto, "none"))  # inference gave nothing
    model, macs = _model(tmp_path, op)
    result = profile(model, batch=2, threads=1, runs=2, warmup_runs=1, machine=MACHINE)
    node = _node(result, op)
    assert node.macs == 2 * macs and not node.unknown_cost
    assert result.total_macs == 2 * macs


# Which branch runs depends on the data, so only the run knows the Conv's input: (1, 3, 8, 8) or (1, 3, 8, 4).
CONV_AFTER_DATA_DEPENDENT_IF = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, C, H, W] x) => (float[N, K, P, Q] y)
    <float zero = {0.0}, int64[1] starts = {0}, int64[1] ends = {4}, int64[1] axes = {3}> {
        total = ReduceSum <keepdims = 0> (x)
        positive = Greater (total, zero)
        x2 = If (positive) <then_branch = then_g () => (float[N, C, H, W] t) { t = Identity (x) },
                            else_branch = else_g () => (float[N, C, H, S] e) { e = Slice (x, starts, ends, axes) }>
        y = Conv (x2, w)
    }"""


def test_a_conv_behind_a_data_dependent_if_is_costed_at_the_shape_that_ran(tmp_path: Path) -> None:
    proto = onnx.parser.parse_model(CONV_AFTER_DATA_DEPENDENT_IF)
    proto.graph.initializer.append(numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w"))
    onnx.save(proto, tmp_path / "branchy.onnx")
    model = hone.load(tmp_path / "branchy.onnx")
    model.default_dims.update({"C": 3, "H": 8, "W": 8})
    result = profile(model, threads=1, runs=2, warmup_runs=1, machine=MACHINE)
    conv = _node(result, "Conv")
    assert conv.macs in (4 * 6 * 6 * 3 * 9, 4 * 6 * 2 * 3 * 9) and not conv.unknown_cost  # W 8, or sliced to 4
    assert result.unknown_ops == {"If": 1}  # the If holds subgraphs: its own cost stays unknown, with a note
