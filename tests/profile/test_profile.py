"""hone profile: per-node time, attribution of fused nodes, roofline classes, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

import hone
from hone.machine import MachineCeilings, ceilings
from hone.profile import OUTSIDE_NODES_ROW, profile, write_trace
from hone.profile.attribute import attribute
from hone.profile.roofline import Roofline, classify, dominant_bound
from hone.report.plots import write_profile_plots

ROOF = Roofline(gemm_gflops=100.0, memory_gbps=20.0)  # ridge point: 5 FLOP/byte


@pytest.fixture(scope="module")
def machine() -> MachineCeilings:
    """This machine's measured roofs (cached in the test session's hone cache)."""
    return ceilings()


def _save(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / f"{name}.onnx"
    onnx.save(onnx.parser.parse_model(text), path)
    return path


@pytest.mark.parametrize(
    ("op_type", "flops", "bytes_moved", "time_ms", "bound"),
    [
        ("MatMul", 2_000_000_000, 12_000_000, 25.0, "compute"),  # 80 GFLOP/s of 100
        ("Add", 4_000_000, 48_000_000, 3.0, "memory"),  # 16 GB/s of 20
        ("Add", 8, 96, 0.01, "overhead"),  # tiny: far under both roofs
        ("MemcpyToHost", 0, 4_000_000, 1.0, "transfer"),
    ],
)
def test_classify_places_a_node_by_its_binding_roof(op_type, flops, bytes_moved, time_ms, bound) -> None:
    placement = classify(op_type, flops, bytes_moved, time_ms, ROOF)
    assert placement.bound == bound


def test_roof_percentage_is_the_achieved_rate_over_the_binding_roof() -> None:
    compute = classify("MatMul", 2_000_000_000, 12_000_000, 25.0, ROOF)
    assert compute.achieved_gflops == pytest.approx(80.0)
    assert compute.roof_pct == pytest.approx(80.0)
    memory = classify("Add", 4_000_000, 48_000_000, 3.0, ROOF)
    assert memory.achieved_gbps == pytest.approx(16.0)
    assert memory.roof_pct == pytest.approx(80.0)


def test_the_whole_model_takes_the_class_holding_most_time() -> None:
    assert dominant_bound([("compute", 3.0), ("memory", 2.0), ("memory", 2.0)]) == "memory"


def test_a_fused_executed_node_covers_the_chain_it_replaced() -> None:
    original = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 2, 4, 4] x) => (float[1, 2, 4, 4] y) <float[2, 2, 1, 1] w, float[2] s, float[2] b, float[2] m, float[2] v> {
            c = Conv (x, w)
            n = BatchNormalization (c, s, b, m, v)
            r = Relu (n)
            y = Identity (r)
        }""")
    for node, name in zip(original.graph.node, ("conv", "bn", "relu", "id")):
        node.name = name
    optimized = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>
        g (float[1, 2, 4, 4] x) => (float[1, 2, 4, 4] y) <float[2, 2, 1, 1] w_fused, float[2] b_fused> {
            y = com.microsoft.FusedConv (x, w_fused, b_fused)
        }""")
    optimized.graph.node[0].name = "r_fused"
    # The fused node writes the graph output y directly: it stands for conv, bn, relu and id.
    result = attribute(original, optimized, ["r_fused"])
    assert result.covered == {"r_fused": ["conv", "bn", "relu", "id"]}
    assert result.removed == []


def test_layout_copies_map_back_to_the_original_tensors() -> None:
    original = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 8, 4, 4] x) => (float[1, 8, 4, 4] y) <float[8, 8, 1, 1] w> {
            a = Conv (x, w)
            y = Relu (a)
        }""")
    original.graph.node[0].name, original.graph.node[1].name = "conv", "relu"
    optimized = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17, "com.microsoft.nchwc" : 1]>
        g (float[1, 8, 4, 4] x) => (float[1, 8, 4, 4] y) <float[8, 8, 1, 1] w> {
            x_nchwc = com.microsoft.nchwc.ReorderInput (x)
            y_nchwc = com.microsoft.nchwc.Conv (x_nchwc, w)
            y = com.microsoft.nchwc.ReorderOutput (y_nchwc)
        }""")
    for node, name in zip(optimized.graph.node, ("reorder_in", "y_nchwc", "reorder_out")):
        node.name = name
    result = attribute(original, optimized, ["reorder_in", "y_nchwc", "reorder_out"])
    assert result.covered["y_nchwc"] == ["conv", "relu"]
    assert result.covered["reorder_in"] == [] and result.covered["reorder_out"] == []


def test_a_large_matmul_profiles_compute_bound(tmp_path: Path, machine: MachineCeilings) -> None:
    import numpy as np
    from onnx import numpy_helper

    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[batch, 768] x, float[768, 768] w) => (float[batch, 768] y) {
            y = MatMul (x, w)
        }""")
    weight = np.random.default_rng(0).standard_normal((768, 768)).astype(np.float32)
    model.graph.initializer.append(numpy_helper.from_array(weight, "w"))
    del model.graph.input[1]
    path = tmp_path / "matmul.onnx"
    onnx.save(model, path)
    result = profile(hone.load(path), batch=768, optimization="disabled", runs=5, machine=machine)
    matmul = next(n for n in result.nodes if n.op_type == "MatMul")
    assert matmul.macs == 768**3 and matmul.flops == 2 * 768**3
    assert matmul.bound == "compute"


def test_a_large_add_profiles_memory_bound(tmp_path: Path, machine: MachineCeilings) -> None:
    path = _save(tmp_path, """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[batch, 1048576] x, float[batch, 1048576] z) => (float[batch, 1048576] y) {
            y = Add (x, z)
        }""", "add")
    result = profile(hone.load(path), batch=8, runs=5, machine=machine)
    (add,) = [n for n in result.nodes if n.op_type == "Add"]
    assert add.bytes == 3 * 8 * 1048576 * 4
    assert add.bound == "memory"


def test_a_chain_of_tiny_ops_profiles_overhead_bound(tmp_path: Path, machine: MachineCeilings) -> None:
    body = "\n".join(f"t{i + 1} = {'Relu' if i % 2 else 'Neg'} (t{i})" for i in range(20))
    path = _save(tmp_path, f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[batch, 4] t0) => (float[batch, 4] t20) {{
            {body}
        }}""", "tiny")
    result = profile(hone.load(path), batch=1, optimization="disabled", runs=10, machine=machine)
    assert len(result.nodes) == 20
    assert {n.bound for n in result.nodes} == {"overhead"}
    assert result.bound == "overhead"


@pytest.fixture(scope="module")
def small_cnn_profile(tmp_path_factory: pytest.TempPathFactory, machine: MachineCeilings):
    folder = tmp_path_factory.mktemp("cnn")
    factory = folder / "cnn.py"
    factory.write_text(
        "import torch\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16),\n"
        "        torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.BatchNorm2d(16),\n"
        "        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10))\n"
    )
    model = hone.load(f"{factory}:make", input_shapes=["1,3,32,32"])
    return folder, profile(model, batch=2, runs=5, machine=machine)


def test_fused_conv_bn_relu_time_is_attributed_to_all_three(small_cnn_profile) -> None:
    _, result = small_cnn_profile
    covered = {name for node in result.nodes for name in node.covers}
    groups = [node.covered_ops for node in result.nodes]
    assert any("Conv+BatchNormalization+Relu" in group for group in groups), groups
    assert sum(1 for name in covered if "BatchNormalization" in name) == 2
    assert result.total_macs == 2 * (32 * 32 * 16 * 3 * 9 + 32 * 32 * 16 * 16 * 9 + 16 * 10)


def test_time_outside_nodes_is_its_own_row_and_shares_add_up(small_cnn_profile) -> None:
    _, result = small_cnn_profile
    rows = {row.op_type: row for row in result.by_op_type}
    assert result.total_ms >= result.nodes_ms > 0
    assert sum(row.time_ms for row in result.by_op_type) == pytest.approx(result.total_ms, rel=1e-6)
    if result.outside_nodes_ms > 0:
        assert rows[OUTSIDE_NODES_ROW].bound == "overhead"
    assert sum(result.bound_shares.values()) == pytest.approx(1.0, rel=1e-6)


def test_the_trace_opens_as_chrome_trace_with_hone_classes(small_cnn_profile) -> None:
    folder, result = small_cnn_profile
    path = write_trace(result, folder / "trace.json", force=True)
    trace = json.loads(path.read_text())
    events = trace["traceEvents"]
    nodes = [e for e in events if e.get("cat") == "Node"]
    assert nodes and all(e["ph"] == "X" and e["dur"] >= 0 and "ts" in e for e in events)
    assert all(e["args"]["hone_bound"] in ("compute", "memory", "overhead", "transfer", "sync") for e in nodes)


@pytest.mark.parametrize("suffix", ["png", "svg"])
def test_roofline_and_breakdown_plots_are_written(small_cnn_profile, suffix: str) -> None:
    folder, result = small_cnn_profile
    written = write_profile_plots(result, folder / f"roofline.{suffix}", force=True)
    assert [p.name for p in written] == [f"roofline.{suffix}", f"roofline-breakdown.{suffix}"]
    head = written[0].read_bytes()[:200]
    assert head.startswith(b"\x89PNG") if suffix == "png" else b"<svg" in head or b"<?xml" in head


def test_the_cli_json_holds_the_contract_fields(cli, tmp_path: Path, mlp_path: Path) -> None:
    out = tmp_path / "profile.json"
    result = cli("profile", str(mlp_path), "--batch", "4", "--runs", "5", "--json", str(out))
    assert result.exit_code == 0, result.stderr
    data = json.loads(out.read_text())
    for key in ("total_macs", "total_flops", "total_ms", "bound", "nodes"):
        assert key in data
    assert set(data["ceilings"]) >= {"gemm_gflops", "memory_gbps"}
    assert data["total_macs"] == 4 * 4 * 3
    for node in data["nodes"]:
        assert set(node) >= {"name", "op_type", "time_ms", "macs", "flops", "bytes", "bound"}
    assert "recommendations" in result.stdout


def test_machine_prints_and_writes_its_ceilings(cli, tmp_path: Path) -> None:
    out = tmp_path / "machine.json"
    result = cli("machine", "--json", str(out))
    assert result.exit_code == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["gemm_gflops"] > 0 and data["memory_gbps"] > 0 and data["measured_at"]
    assert "GFLOP/s" in result.stdout


def test_standalone_batchnorm_time_is_measured_and_recommended_for_folding(small_cnn_profile, machine) -> None:
    folder, _ = small_cnn_profile
    model = hone.load(f"{folder / 'cnn.py'}:make", input_shapes=["1,3,32,32"])
    result = profile(model, batch=2, runs=5, optimization="disabled", machine=machine)
    bn_rows = [row for row in result.by_op_type if row.op_type == "BatchNormalization"]
    assert bn_rows and bn_rows[0].nodes == 2 and bn_rows[0].time_ms > 0
    advice = [r for r in result.recommendations if "fuse_conv_bn" in r.action]
    assert advice and "BatchNormalization" in advice[0].finding and advice[0].share > 0


def test_ops_without_a_cost_formula_are_reported_never_silently_zero(tmp_path: Path, machine) -> None:
    path = _save(tmp_path, """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[batch, 16] x) => (float[batch, 16] y) {
            a = Relu (x)
            y = Hardmax (a)
        }""", "hardmax")
    result = profile(hone.load(path), batch=2, runs=3, machine=machine)
    assert result.unknown_ops == {"Hardmax": 1}
    assert any("Hardmax" in r.finding for r in result.recommendations)
    hardmax = next(n for n in result.nodes if n.op_type == "Hardmax")
    assert hardmax.unknown_cost
