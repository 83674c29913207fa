"""int8.py on models third-party exporters write: opsets below 13 (no per-channel axis on
QuantizeLinear/DequantizeLinear), and Conv/MatMul/Gemm inside If/Loop/Scan bodies."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

import hone
from hone.errors import OptionError
from hone.model import Model
from hone.quantize import quantize
from hone.quantize.candidates import choose_mode
from hone.quantize.calibration import calibration_set
from hone.quantize.int8 import (
    dynamic_int8,
    dynamic_op_types,
    graph_op_types,
    quantizable_nodes,
    static_int8,
    subgraph_nodes,
)
from hone.runtime import Session, SessionConfig

CONV_AT = """
<ir_version: 7, opset_import: ["" : OPSET]>
cnn (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, w, b)
    y = Relu (c)
}
"""


def _conv(tmp_path: Path, opset: int) -> Model:
    rng = np.random.default_rng(0)
    proto = onnx.parser.parse_model(CONV_AT.replace("OPSET", str(opset)))
    weight = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    weight[0] *= 0.01  # a small channel: per-tensor scales would flatten it
    proto.graph.initializer.extend([numpy_helper.from_array(weight, "w"),
                                    numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b")])
    proto.graph.node[0].name = "conv"
    onnx.checker.check_model(proto, full_check=True)
    path = tmp_path / f"conv{opset}.onnx"
    onnx.save(proto, path)
    return hone.load(path)


def _opset(proto: onnx.ModelProto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _axes(proto: onnx.ModelProto) -> list[str]:
    """Names of the QuantizeLinear/DequantizeLinear nodes that carry an ``axis`` (per-channel)."""
    return [n.name for n in proto.graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and any(a.name == "axis" for a in n.attribute)]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _assert_valid_and_close(float_model: Model, quantized: Model, feeds: dict[str, np.ndarray]) -> onnx.ModelProto:
    proto = ir.to_proto(quantized.ir)
    onnx.checker.check_model(proto, full_check=True)
    got = Session(quantized).run(feeds)[0]
    want = Session(float_model).run(feeds)[0]
    assert got.shape == want.shape and _cosine(got, want) > 0.99
    return proto


@pytest.mark.parametrize("opset", [11, 12])
def test_per_channel_qdq_below_opset_13_upgrades_the_model_to_13_and_stays_valid(tmp_path: Path, opset: int) -> None:
    model = _conv(tmp_path, opset)
    calibration = calibration_set(model, samples=8)
    quantized = static_int8(model, calibration, fmt="qdq", per_channel=True)
    proto = _assert_valid_and_close(model, quantized, calibration.feeds[0])
    assert _opset(proto) == 13
    assert "w_DequantizeLinear" in _axes(proto), "the weights keep one scale per output channel"
    assert f"opset {opset} -> 13" in quantized.steps[-1]


def test_a_failed_opset_conversion_falls_back_to_per_tensor_weights_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from onnx import version_converter

    def refuse(*_args: object, **_kwargs: object) -> onnx.ModelProto:
        raise RuntimeError("no adapter for this op")

    monkeypatch.setattr(version_converter, "convert_version", refuse)
    model = _conv(tmp_path, 11)
    calibration = calibration_set(model, samples=8)
    quantized = static_int8(model, calibration, fmt="qdq", per_channel=True)
    proto = _assert_valid_and_close(model, quantized, calibration.feeds[0])
    assert _opset(proto) == 11 and _axes(proto) == []
    assert "per-tensor weights (opset 11 has no per-channel axis)" in quantized.steps[-1]
    assert "quantized per tensor" in caplog.text and "no adapter for this op" in caplog.text


def test_qoperator_below_opset_13_keeps_the_opset_and_runs(tmp_path: Path) -> None:
    model = _conv(tmp_path, 11)
    calibration = calibration_set(model, samples=8)
    quantized = static_int8(model, calibration, fmt="qoperator", per_channel=True)
    proto = _assert_valid_and_close(model, quantized, calibration.feeds[0])
    assert _opset(proto) == 11 and [n.op_type for n in proto.graph.node].count("QLinearConv") == 1


def test_opset_13_models_are_quantized_as_they_are(tmp_path: Path) -> None:
    model = _conv(tmp_path, 13)
    quantized = static_int8(model, calibration_set(model, samples=8), fmt="qdq")
    assert _opset(ir.to_proto(quantized.ir)) == 13 and "->" not in quantized.steps[-1]


def _branches(tmp_path: Path, op: str) -> Model:
    """y = If(sum(x) > 0, then: op(x, w), else: op(-x, w)): every op node lives in an If body,
    the then-branch's weight in the body itself, the else-branch's read from the main graph."""
    rng = np.random.default_rng(1)
    if op == "Conv":
        shape, weight_shape, out_shape, attrs = ["N", 3, 8, 8], (4, 3, 3, 3), ["N", 4, 8, 8], {"pads": [1, 1, 1, 1]}
    else:
        shape, weight_shape, out_shape, attrs = ["N", 16], (16, 8), ["N", 8], {}
    weight = rng.normal(size=weight_shape).astype(np.float32)
    then_branch = helper.make_graph(
        [helper.make_node(op, ["x", "w_then"], ["t"], name=f"then_{op.lower()}", **attrs)], "then", [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)], [numpy_helper.from_array(weight, "w_then")])
    else_branch = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e0"], name="else_neg"),
         helper.make_node(op, ["e0", "w"], ["e"], name=f"else_{op.lower()}", **attrs)], "else", [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"),
         helper.make_node("Greater", ["s", "zero"], ["positive"], name="is_positive"),
         helper.make_node("If", ["positive"], ["y"], name="branch", then_branch=then_branch, else_branch=else_branch)],
        f"{op.lower()}_in_if", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.array(0, np.float32), "zero")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    path = tmp_path / f"{op.lower()}_in_if.onnx"
    onnx.save(proto, path)
    return hone.load(path)


def _body_ops(proto: onnx.ModelProto) -> dict[str, list[str]]:
    """The op types of each If branch, by branch name."""
    branch = next(n for n in proto.graph.node if n.op_type == "If")
    return {a.name: [n.op_type for n in a.g.node] for a in branch.attribute if a.type == onnx.AttributeProto.GRAPH}


def _feeds(model: Model, sign: float) -> dict[str, np.ndarray]:
    """Inputs whose sum is positive (sign 1: the then-branch runs) or negative (-1: the else-branch)."""
    dims = (2, 3, 8, 8) if model.inputs[0].shape[1] == 3 else (2, 16)
    return {"x": sign * np.abs(np.random.default_rng(3).normal(size=dims)).astype(np.float32)}


@pytest.mark.parametrize("op", ["Conv", "MatMul"])
def test_op_types_cover_if_bodies_while_quantizable_nodes_lists_the_main_graph_only(tmp_path: Path, op: str) -> None:
    model = _branches(tmp_path, op)
    assert {op, "If", "Neg", "ReduceSum"} <= graph_op_types(model)
    assert op not in {node.op_type for node in model.ir.graph}
    assert quantizable_nodes(model) == []
    assert subgraph_nodes(model) == [f"else_{op.lower()}", f"then_{op.lower()}"]


def test_matmuls_only_inside_an_if_choose_dynamic_int8(tmp_path: Path) -> None:
    assert choose_mode(_branches(tmp_path, "MatMul")) == ("dynamic", None)


def test_convs_only_inside_an_if_choose_dynamic_conv_integer_and_say_why(tmp_path: Path) -> None:
    model = _branches(tmp_path, "Conv")
    mode, note = choose_mode(model)
    assert mode == "dynamic" and "\n" not in (note or "")
    assert note is not None and note.startswith("Conv only inside If/Loop/Scan bodies (else_conv, then_conv)")
    assert "Conv" in dynamic_op_types(model)
    quantized = dynamic_int8(model, op_types=dynamic_op_types(model))
    body_ops = _body_ops(ir.to_proto(quantized.ir))
    assert all("ConvInteger" in ops and "Conv" not in ops for ops in body_ops.values()), body_ops
    for sign in (1.0, -1.0):  # each branch runs and stays close to float
        feeds = _feeds(model, sign)
        reference = Session(model, SessionConfig(threads=1)).run(feeds)[0]
        got = Session(quantized, SessionConfig(threads=1)).run(feeds)[0]
        assert np.abs(got - reference).max() < 0.05 * np.abs(reference).max()


def test_static_int8_keeps_convs_inside_an_if_float_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = _branches(tmp_path, "Conv")
    quantized = static_int8(model, calibration_set(model, samples=8), fmt="qdq")
    proto = ir.to_proto(quantized.ir)
    onnx.checker.check_model(proto, full_check=True)
    assert _body_ops(proto) == {"then_branch": ["Conv"], "else_branch": ["Neg", "Conv"]}
    assert "2 If/Loop/Scan body nodes kept float" in quantized.steps[-1]
    assert "keeps 2 node(s) inside If/Loop/Scan bodies float (else_conv, then_conv)" in caplog.text
    for sign in (1.0, -1.0):
        feeds = _feeds(model, sign)
        np.testing.assert_array_equal(Session(quantized).run(feeds)[0], Session(model).run(feeds)[0])


def test_dynamic_int8_quantizes_matmuls_inside_both_branches_of_an_if(tmp_path: Path) -> None:
    model = _branches(tmp_path, "MatMul")
    quantized = dynamic_int8(model)
    proto = ir.to_proto(quantized.ir)
    onnx.checker.check_model(proto, full_check=True)
    bodies = _body_ops(proto)
    assert all("MatMulInteger" in ops and "MatMul" not in ops for ops in bodies.values()), bodies
    assert "2 If/Loop/Scan body nodes quantized too" in quantized.steps[-1]
    for sign in (1.0, -1.0):  # each branch answers like the float one
        feeds = _feeds(model, sign)
        assert _cosine(Session(quantized).run(feeds)[0], Session(model).run(feeds)[0]) > 0.999


def test_dynamic_int8_keeps_an_excluded_body_node_float(tmp_path: Path) -> None:
    quantized = dynamic_int8(_branches(tmp_path, "MatMul"), exclude=["else_matmul"])
    bodies = _body_ops(ir.to_proto(quantized.ir))
    assert bodies["else_branch"] == ["Neg", "MatMul"] and "MatMulInteger" in bodies["then_branch"]


def test_dynamic_int8_quantizes_the_main_graph_alone_when_onnxruntime_fails_on_the_bodies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from onnxruntime import quantization

    real = quantization.quantize_dynamic

    def failing_on_bodies(*args: object, **kwargs: object) -> None:
        if kwargs.get("extra_options", {}).get("EnableSubgraph"):
            raise AttributeError("'NoneType' object has no attribute 'extend'")
        real(*args, **kwargs)

    monkeypatch.setattr(quantization, "quantize_dynamic", failing_on_bodies)
    model = _branches(tmp_path, "MatMul")
    quantized = dynamic_int8(model)
    assert _body_ops(ir.to_proto(quantized.ir))["then_branch"] == ["MatMul"]
    assert "2 If/Loop/Scan body nodes kept float" in quantized.steps[-1]
    assert "could not quantize the If/Loop/Scan bodies" in caplog.text


def test_quantize_auto_reaches_matmuls_inside_an_if(tmp_path: Path) -> None:
    from hone.quantize import quantize

    kept, result = quantize(_branches(tmp_path, "MatMul"), measure_speed=False, samples=16, threads=1)
    assert result.mode == "dynamic" and result.kept_quantized
    assert any(op == "MatMulInteger" for ops in _body_ops(ir.to_proto(kept.ir)).values() for op in ops)


def _weight_levels(proto: onnx.ModelProto) -> int:
    """The largest |level| of the Conv weight's int8 values."""
    weights = [numpy_helper.to_array(t) for t in proto.graph.initializer if t.data_type == TensorProto.INT8]
    return max(int(np.abs(w.astype(np.int32)).max()) for w in weights)


def test_reduce_range_quantizes_weights_to_seven_bits_and_stays_close(tmp_path: Path) -> None:
    model = _conv(tmp_path, 13)
    calibration = calibration_set(model, samples=8)
    full = ir.to_proto(static_int8(model, calibration, fmt="qoperator").ir)
    reduced_model = static_int8(model, calibration, fmt="qoperator", reduce_range=True)
    reduced = _assert_valid_and_close(model, reduced_model, calibration.feeds[0])
    assert _weight_levels(full) == 127 and _weight_levels(reduced) <= 64
    assert "7-bit weights" in reduced_model.steps[-1]


@pytest.mark.parametrize("saturates", [True, False])
def test_u8u8_and_seven_bit_candidates_are_built_where_the_u8s8_kernels_saturate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, saturates: bool) -> None:
    candidates_module = importlib.import_module("hone.quantize.candidates")

    monkeypatch.setattr(candidates_module, "int8_saturates", lambda: saturates)
    kept, result = quantize(_conv(tmp_path, 13), mode="static", budget="cosine-mean=0.9,channel-error=0.5",
                                            measure_speed=False)
    names = [c.name for c in result.candidates]
    extra = {"static-qdq-u8u8", "static-qoperator-u8u8", "static-qdq-7bit", "static-qoperator-7bit"}
    assert set(names) == ({"static-qdq", "static-qoperator"} | (extra if saturates else set()))
    assert names[0] == ("static-qdq-u8u8" if saturates else "static-qdq"), "the fallback ranks on the first QDQ build"
    assert any("no VNNI" in note for note in result.notes) is saturates


def test_the_u8u8_candidate_carries_its_session_config_through_save_and_load(tmp_path: Path) -> None:
    model = _conv(tmp_path, 13)
    calibration = calibration_set(model, samples=8)
    quantized = static_int8(model, calibration, fmt="qoperator", u8u8=True)
    assert quantized.session_config == {"session.x64quantprecision": "1"}
    assert static_int8(model, calibration, fmt="qoperator").session_config == {}
    reloaded = hone.load(quantized.save(tmp_path / "int8.onnx"))
    assert reloaded.session_config == {"session.x64quantprecision": "1"}
    _assert_valid_and_close(model, reloaded, calibration.feeds[0])  # hone's Session applies it
