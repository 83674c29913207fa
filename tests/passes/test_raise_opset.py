"""raise_opset: graphs below opset 18 converted by onnx's version converter, so that the fusions
may emit the newer ops they use (LayerNormalization is opset 17) and match the opset-18 forms
their rules are written for (ReduceMean's axes as an input)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

import hone
from hone.passes.raise_opset import TARGET_OPSET, RaiseOpsetPass

# LayerNorm as PyTorch's TorchScript exporter spells it below opset 17, between two MatMuls.
SPELLED_LAYER_NORM = """
    <ir_version: 8, opset_import: ["" : {opset}]>
    g (float[N, S, 8] x) => (float[N, S, 8] y) <float[8, 8] w = {{{w}}}, float[8] gamma = {{{gamma}}},
        float[8] beta = {{{beta}}}, float two = {{2.0}}, float eps = {{{eps}}}> {{
        h = MatMul (x, w)
        mean = ReduceMean <axes = [-1]> (h)
        centred = Sub (h, mean)
        squared = Pow (centred, two)
        variance = ReduceMean <axes = [-1]> (squared)
        shifted = Add (variance, eps)
        deviation = Sqrt (shifted)
        normed = Div (centred, deviation)
        scaled = Mul (normed, gamma)
        z = Add (scaled, beta)
        y = MatMul (z, w)
    }}"""


def _text(opset: int, eps: str = "0.00001") -> str:
    rng = np.random.default_rng(0)

    def floats(n: int) -> str:
        return ", ".join(f"{v:.3f}" for v in rng.uniform(-1, 1, n))

    return SPELLED_LAYER_NORM.format(opset=opset, w=floats(64), gamma=floats(8), beta=floats(8), eps=eps)


def _run(path: Path | onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    data = path.SerializeToString() if isinstance(path, onnx.ModelProto) else str(path)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


# BERT's epsilon is 1e-12: close enough to 0 for onnxscript's no-op rules, which hone hides it from
@pytest.mark.parametrize(("opset", "eps"), [(13, "0.000000000001"), (14, "0.00001"), (16, "0.00001")])
def test_an_old_opset_graph_is_raised_and_its_layer_norm_fused(tmp_path: Path, opset: int, eps: str) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(onnx.parser.parse_model(_text(opset, eps)), path)
    optimized, result = hone.optimize(str(path), target="ort-cpu")
    assert result.verified
    report = {p.name: p for p in result.passes}
    assert report["raise_opset"].status == "applied" and optimized.ir.opset_imports[""] == TARGET_OPSET
    ops = [n.op_type for n in optimized.ir.graph]
    assert "LayerNormalization" in ops and "ReduceMean" not in ops, ops
    x = np.random.default_rng(1).standard_normal((2, 5, 8)).astype(np.float32)
    proto = ir.to_proto(optimized.ir)
    np.testing.assert_allclose(_run(proto, x), _run(path, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opset", [TARGET_OPSET, 21])
def test_a_graph_at_the_target_opset_or_later_is_left_alone(opset: int) -> None:
    text = f"""
        <ir_version: 10, opset_import: ["" : {opset}]>
        g (float[2] x) => (float[2] y) {{
            y = Relu (x)
        }}"""
    model = ir.from_proto(onnx.parser.parse_model(text))
    hone_pass = RaiseOpsetPass()
    assert not hone_pass(model).modified and hone_pass.missed == []
    assert model.opset_imports[""] == opset


def test_a_graph_the_converter_cannot_convert_is_left_with_the_reason() -> None:
    text = """
        <ir_version: 8, opset_import: ["" : 13, "custom.domain" : 1]>
        g (float[2] x) => (float[2] y) {
            s = Softmax (x)
            y = custom.domain.Mystery (s)
        }"""
    model = ir.from_proto(onnx.parser.parse_model(text))
    hone_pass = RaiseOpsetPass()
    result = hone_pass(model)
    if result.modified:  # onnx's converter passes unknown domains through: then it must say 17
        assert model.opset_imports[""] == TARGET_OPSET
    else:
        assert model.opset_imports[""] == 13
        assert len(hone_pass.missed) == 1 and hone_pass.missed[0].startswith("opset 13 left:")


def test_a_graph_without_transformer_parts_keeps_its_opset() -> None:
    text = """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[N, 3, 8, 8] x) => (float[N, 3, 8, 8] y) {
            y = Relu (x)
        }"""
    model = ir.from_proto(onnx.parser.parse_model(text))
    assert not RaiseOpsetPass()(model).modified and model.opset_imports[""] == 13
