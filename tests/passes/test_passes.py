"""Each pass on small ONNX-text graphs: did it change, the resulting structure, equal outputs in
onnxruntime on seeded inputs, and onnx.checker with full_check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import hone
from hone.data import synthesize
from hone.errors import InvalidModelError, OptionError
from hone.model import Model, _graph_specs
from hone.passes import optimize
from hone.passes.base import HonePass
from hone.passes.collapse_chains import CollapseChainsPass
from hone.passes.eliminate_common_subexpressions import EliminateCommonSubexpressionsPass
from hone.passes.fold_constants import FoldConstantsPass
from hone.passes.fuse_conv_bn import FuseConvBnPass
from hone.passes.fuse_matmul_add import FuseMatMulAddPass
from hone.passes.remove_dead_code import RemoveDeadCodePass
from hone.passes.remove_no_ops import RemoveNoOpsPass
from hone.runtime import Session, SessionConfig

CONV_BN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 2, 5, 5] x) => (float[N, 3, 5, 5] y) <
    float[3, 2, 3, 3] w = {0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, -0.8, 0.9, 0.1, 0.2, -0.3, 0.4, 0.5, 0.6, -0.7, 0.8, 0.9,
                           -0.1, 0.2, 0.3, -0.4, 0.5, 0.6, 0.7, 0.8, -0.9, 0.1, -0.2, 0.3, 0.4, 0.5, -0.6, 0.7, 0.8, 0.9,
                           0.3, 0.2, -0.1, 0.4, 0.5, -0.6, 0.2, 0.8, 0.1, -0.1, 0.2, 0.3, 0.4, -0.5, 0.6, 0.7, 0.8, 0.2},
    float[3] s = {1.5, 0.5, 2.0}, float[3] b = {0.1, -0.2, 0.3}, float[3] m = {0.2, -0.1, 0.05}, float[3] v = {0.9, 1.3, 0.4}> {
    c = Conv <pads = [1, 1, 1, 1]> (x, w)
    y = BatchNormalization (c, s, b, m, v)
}
"""
CONV_BN_SHARED = CONV_BN.replace("float[N, 3, 5, 5] y)", "float[N, 3, 5, 5] y, float[N, 3, 5, 5] c)")

CASES = {
    "fold_constants": (FoldConstantsPass, """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 2] x) => (float[N, 2] y) <float[2] a = {1.0, 2.0}, float[2] b = {0.5, 0.25}> {
            k = Mul (a, b)
            y = Add (x, k)
        }""", ["Add"]),
    "remove_no_ops": (RemoveNoOpsPass, """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 2] x) => (float[N, 2] y) <float zero = {0.0}, float one = {1.0}> {
            a = Identity (x)
            b = Add (a, zero)
            c = Mul (b, one)
            d = Dropout (c)
            y = Relu (d)
        }""", ["Relu"]),
    "collapse_chains": (CollapseChainsPass, """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 2, 3] x) => (float[N, 2, 3] y) {
            a = Transpose <perm = [0, 2, 1]> (x)
            b = Transpose <perm = [0, 2, 1]> (a)
            y = Relu (b)
        }""", ["Relu"]),
    "fuse_conv_bn": (FuseConvBnPass, CONV_BN, ["Conv"]),
    "fuse_matmul_add": (FuseMatMulAddPass, """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4, 3] x) => (float[4, 2] y) <float[3, 2] w = {1.0, 2.0, 3.0, 4.0, 5.0, 6.0}, float[2] b = {0.5, -0.5}> {
            m = MatMul (x, w)
            y = Add (m, b)
        }""", ["Gemm"]),
    "eliminate_common_subexpressions": (EliminateCommonSubexpressionsPass, """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 2] x) => (float[N, 2] y) {
            a = Relu (x)
            b = Relu (x)
            y = Add (a, b)
        }""", ["Relu", "Add"]),
    "remove_dead_code": (RemoveDeadCodePass, """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 2] x) => (float[N, 2] y) <float[2] unused = {1.0, 2.0}> {
            dead = Sigmoid (x)
            y = Relu (x)
        }""", ["Relu"]),
}


def _outputs(model_ir: ir.Model, batch: int = 3) -> list[np.ndarray]:
    model = Model(ir=model_ir, name="t", source="t", source_kind="onnx",
                  inputs=_graph_specs(model_ir.graph.inputs, {}), outputs=())
    feeds = synthesize(model.inputs, batch=batch, seed=1)
    return Session(model, SessionConfig(optimization="disabled")).run(feeds)


@pytest.mark.parametrize("case", list(CASES))
def test_each_pass_rewrites_keeps_outputs_and_passes_the_checker(case: str) -> None:
    pass_class, text, expected_ops = CASES[case]
    original = ir.from_proto(onnx.parser.parse_model(text))
    candidate = ir.from_proto(onnx.parser.parse_model(text))
    hone_pass = pass_class()
    result = hone_pass(candidate)
    assert result.modified
    assert [node.op_type for node in result.model.graph] == expected_ops
    for before, after in zip(_outputs(original), _outputs(result.model), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
    onnx.checker.check_model(ir.to_proto(result.model), full_check=True)


@pytest.mark.parametrize("body", [
    "s = Mul (x, x)\n y = Add (s, eps)",  # log(x*x + eps): onnxscript's add_0_rule took 1e-10 for 0
    "y = Add (x, zeros)",  # a [1, 1, 1] zero grows the rank of x: not a no-op
    "y = Div (x, almost_one)",
])
def test_arithmetic_with_a_constant_that_is_not_exactly_neutral_is_kept(body: str) -> None:
    text = f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 2] x) => (float y) <float eps = {{1e-10}}, float[1, 1, 1] zeros = {{0.0}},
                                        float almost_one = {{1.000001}}> {{
            {body}
        }}"""
    model = ir.from_proto(onnx.parser.parse_model(text))
    before = [node.op_type for node in model.graph]
    result = RemoveNoOpsPass()(model)
    assert not result.modified and [node.op_type for node in result.model.graph] == before


def test_a_row_bias_becomes_a_vector_so_the_qdq_quantizer_takes_the_gemm() -> None:
    text = """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4, 3] x) => (float[4, 2] y) <float[3, 2] w = {1.0, 2.0, 3.0, 4.0, 5.0, 6.0}, float[1, 2] b = {0.5, -0.5}> {
            m = MatMul (x, w)
            y = Add (m, b)
        }"""
    original = ir.from_proto(onnx.parser.parse_model(text))
    result = FuseMatMulAddPass()(ir.from_proto(onnx.parser.parse_model(text)))
    (gemm,) = list(result.model.graph)
    assert gemm.op_type == "Gemm" and gemm.inputs[2].const_value.shape == (2,)
    assert "b" not in result.model.graph.initializers
    np.testing.assert_allclose(_outputs(result.model, batch=4)[0], _outputs(original, batch=4)[0], rtol=1e-6)
    onnx.checker.check_model(ir.to_proto(result.model), full_check=True)


def test_the_transformer_fusions_keep_an_epsilon_that_onnxscript_takes_for_zero() -> None:
    from hone.passes.fuse_transformer import FuseTransformerPass

    text = """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 2] x) => (float[N, 2] y) <float eps = {1e-10}> {
            s = Mul (x, x)
            t = Add (s, eps)
            y = Log (t)
        }"""
    model = ir.from_proto(onnx.parser.parse_model(text))
    result = FuseTransformerPass()(model)
    assert [node.op_type for node in result.model.graph] == ["Mul", "Add", "Log"]
    assert all(node.domain == "" for node in result.model.graph)
    assert "hone.hidden_from_fusions" not in result.model.opset_imports


@pytest.mark.parametrize("pass_class", [FuseConvBnPass, FuseMatMulAddPass, CollapseChainsPass, RemoveNoOpsPass])
def test_a_pass_with_nothing_to_do_reports_no_change(pass_class) -> None:
    model = ir.from_proto(onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 2] x) => (float[N, 2] y) { y = Sigmoid (x) }"""))
    assert not pass_class()(model).modified


def test_a_batchnorm_whose_conv_output_is_used_elsewhere_is_reported_missed() -> None:
    model = ir.from_proto(onnx.parser.parse_model(CONV_BN_SHARED))
    hone_pass = FuseConvBnPass()
    result = hone_pass(model)
    assert not result.modified
    assert hone_pass.matched == 0
    assert len(hone_pass.missed) == 1 and "not folded" in hone_pass.missed[0]


def test_constant_folding_does_not_unroll_huge_tensors() -> None:
    model = ir.from_proto(onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 1] x) => (float[N, 4194304] y) <int64[2] shape = {1, 4194304}> {
            big = ConstantOfShape <value = float[1] {1.0}> (shape)
            y = Mul (x, big)
        }"""))
    FoldConstantsPass()(model)
    assert "ConstantOfShape" in [node.op_type for node in model.graph]


class _WrongPass(HonePass):
    """Changes the answer on purpose: Relu -> Sigmoid."""

    name = "wrong_on_purpose"

    def rewrite(self, model: ir.Model) -> ir.passes.PassResult:
        for node in model.graph:
            if node.op_type == "Relu":
                node.op_type = "Sigmoid"
        return ir.passes.PassResult(model, modified=True)


class _BrokenPass(HonePass):
    name = "raises_on_purpose"

    def rewrite(self, model: ir.Model) -> ir.passes.PassResult:
        raise RuntimeError("pattern engine exploded")


def test_a_pass_that_changes_the_answer_is_rolled_back_and_the_run_continues(mlp_path: Path, caplog) -> None:
    optimized, result = optimize(str(mlp_path), target="generic",
                                 passes=[_WrongPass(), _BrokenPass(), RemoveDeadCodePass()])
    statuses = {p.name: p.status for p in result.passes}
    assert statuses == {"wrong_on_purpose": "rolled_back", "raises_on_purpose": "failed",
                        "remove_dead_code": "no_change"}
    wrong = result.passes[0]
    assert "'y'" in wrong.message and wrong.max_abs_error > 0
    assert "wrong_on_purpose" in caplog.text and "rolled back" in caplog.text
    assert [n.op_type for n in optimized.ir.graph] == ["MatMul", "Add", "Relu"]


def test_without_verification_a_wrong_pass_is_kept(mlp_path: Path) -> None:
    optimized, result = optimize(str(mlp_path), target="generic", verify=False, passes=[_WrongPass()])
    assert result.passes[0].status == "applied" and result.passes[0].max_abs_error is None
    assert "Sigmoid" in [n.op_type for n in optimized.ir.graph]


UNKNOWN_OP = """
    <ir_version: 8, opset_import: ["" : 17, "my.ops" : 1]>
    g (float[N, 4] x) => (float[N, 4] y) {
        a = Identity (x)
        b = my.ops.Frobnicate (a)
        y = Relu (b)
    }"""


@pytest.mark.parametrize("target", ["ort-cpu", "generic"])
def test_a_model_with_an_op_nobody_knows_is_refused_unless_verification_is_turned_off(tmp_path: Path, target) -> None:
    path = tmp_path / "frobnicate.onnx"
    onnx.save(onnx.parser.parse_model(UNKNOWN_OP), path)
    with pytest.raises(InvalidModelError, match="cannot verify passes.*--no-verify"):
        optimize(str(path), target=target)
    optimized, result = optimize(str(path), target=target, verify=False)
    assert [n.op_type for n in optimized.ir.graph] == ["Frobnicate", "Relu"]  # the Identity went
    assert not result.verified
    assert any("NOT verified" in note for note in result.notes)
    if target == "generic":
        assert any("my.ops::Frobnicate" in note and "kept" in note for note in result.notes)


def test_an_unknown_target_is_an_option_error(mlp_path: Path) -> None:
    with pytest.raises(OptionError, match="ort-cpu"):
        optimize(str(mlp_path), target="tensorflow")


def test_the_cli_writes_the_model_and_the_contract_json(cli, tmp_path: Path) -> None:
    source = tmp_path / "convbn.onnx"
    onnx.save(onnx.parser.parse_model(CONV_BN), source)
    out, report = tmp_path / "out.onnx", tmp_path / "opt.json"
    result = cli("optimize", str(source), "-o", str(out), "--target", "generic", "--json", str(report))
    assert result.exit_code == 0, result.stderr
    data = json.loads(report.read_text())
    assert (data["nodes_before"], data["nodes_after"]) == (2, 1)
    for entry in data["passes"]:
        assert set(entry) >= {"name", "nodes_before", "nodes_after", "seconds", "status", "max_abs_error",
                              "matched", "missed"}
        assert entry["status"] in ("applied", "no_change", "rolled_back", "failed")
    assert [n.op_type for n in onnx.load(out).graph.node] == ["Conv"]
    again = cli("optimize", str(source), "-o", str(out))
    assert again.exit_code == 2 and "--force" in again.stderr


@pytest.mark.slow
def test_resnet18_loses_its_batchnorms_and_keeps_its_answers() -> None:
    optimized, result = hone.optimize("resnet18", target="ort-cpu")
    assert result.op_counts_before["BatchNormalization"] == 20
    assert "BatchNormalization" not in result.op_counts_after
    fuse = next(p for p in result.passes if p.name == "fuse_conv_bn")
    assert fuse.status == "applied" and fuse.matched == 20 and fuse.max_abs_error < 1e-3


OUT_OF_RANGE_GATHER = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 4] x, int64[N] shift) => (float[N, 4] y) {
        big = Constant <value = int64[1] {1000}> ()
        idx = Add (shift, big)
        y = Gather <axis=0> (x, idx)
    }"""


def test_optimize_refuses_a_model_that_cannot_run_on_invented_inputs_naming_the_node(tmp_path: Path) -> None:
    from hone.errors import InventedInputsError

    path = tmp_path / "gather.onnx"
    proto = onnx.parser.parse_model(OUT_OF_RANGE_GATHER)
    proto.graph.node[-1].name = "the_gather"
    onnx.save(proto, path)
    with pytest.raises(InventedInputsError, match="'the_gather' \\(Gather\\).*--data"):
        optimize(str(path), target="ort-cpu")
