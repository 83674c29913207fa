"""The passes hone writes itself: shape simplification, attention fusion (both PyTorch exports'
spellings), Conv/Gemm + activation fusion. Each: did it change, the resulting structure, equal
outputs in onnxruntime on seeded inputs, onnx.checker with full_check, and the reasons it gives
when it does not match."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

import hone
from hone.passes.fuse_activation import FuseActivationPass
from hone.passes.fuse_attention import FuseAttentionPass
from hone.passes.simplify_shapes import SimplifyShapesPass, reshape_target

HIDDEN, HEADS, HEAD_SIZE = 8, 2, 4


def _floats(shape: tuple[int, ...], seed: int) -> str:
    values = np.random.default_rng(seed).uniform(-1, 1, size=shape).round(3)
    return ", ".join(f"{v:.3f}" for v in values.reshape(-1))


def _attention_text(style: str) -> str:
    """A one-layer multi-head attention as PyTorch exports it: ``eager``, ``sdpa`` or ``cross``."""
    kv_source = "m" if style == "cross" else "x"
    inputs = "float[N, S, 8] x, float[N, 1, S, S] mask" if style != "cross" else \
        "float[N, S, 8] x, float[N, T, 8] m, float[N, 1, S, T] mask"
    weights = ", ".join(
        f"float[8, 8] w{p} = {{{_floats((8, 8), i)}}}, float[8] b{p} = {{{_floats((8,), 10 + i)}}}"
        for i, p in enumerate("qkv")
    )
    head = f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g ({inputs}) => (float[N, S, 8] y) <{weights}, int64[4] split = {{0, 0, {HEADS}, {HEAD_SIZE}}},
            int64[3] merge = {{0, 0, {HIDDEN}}}, float scale = {{0.5}}, float root = {{0.70710678}}, float zero = {{0.0}}> {{
            qm = MatMul (x, wq)
            q = Add (qm, bq)
            km = MatMul ({kv_source}, wk)
            k = Add (bk, km)
            vm = MatMul ({kv_source}, wv)
            v = Add (vm, bv)
            qr = Reshape (q, split)
            q4 = Transpose <perm = [0, 2, 1, 3]> (qr)
            kr = Reshape (k, split)
            kt = Transpose <perm = [0, 2, 3, 1]> (kr)
            vr = Reshape (v, split)
            v4 = Transpose <perm = [0, 2, 1, 3]> (vr)
    """
    if style == "sdpa":  # sqrt of the scale on both operands, then a NaN guard after the Softmax
        body = """
            qs = Mul (q4, root)
            ks = Mul (kt, root)
            s = MatMul (qs, ks)
            sm = Add (s, mask)
            p0 = Softmax <axis = -1> (sm)
            nan = IsNaN (p0)
            p = Where (nan, zero, p0)
        """
    else:
        body = """
            s0 = MatMul (q4, kt)
            s = Mul (s0, scale)
            sm = Add (s, mask)
            p = Softmax <axis = -1> (sm)
        """
    tail = """
            c = MatMul (p, v4)
            ct = Transpose <perm = [0, 2, 1, 3]> (c)
            y = Reshape (ct, merge)
        }"""
    return head + body + tail


def _feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """x (and m) random; a mask that hides the last key of every row and every key of batch row 1."""
    rng = np.random.default_rng(seed)
    batch, sequence, keys = 3, 5, 6
    feeds = {"x": rng.standard_normal((batch, sequence, HIDDEN)).astype(np.float32)}
    names = {i.name for i in model.graph.input}
    if "m" in names:
        feeds["m"] = rng.standard_normal((batch, keys, HIDDEN)).astype(np.float32)
    else:
        keys = sequence
    mask = np.zeros((batch, 1, sequence, keys), dtype=np.float32)
    mask[..., -1] = -np.inf
    mask[1] = -np.inf  # a fully masked batch row: the NaN guard's case
    feeds["mask"] = mask
    return feeds


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _apply(hone_pass, text: str) -> tuple[onnx.ModelProto, onnx.ModelProto, bool]:
    original = onnx.parser.parse_model(text)
    model = ir.from_proto(original)
    modified = hone_pass(model).modified
    return original, ir.to_proto(model), modified


@pytest.mark.parametrize(("style", "fused_op"), [("eager", "Attention"), ("sdpa", "Attention"),
                                                 ("cross", "MultiHeadAttention")])
def test_attention_is_fused_for_each_export_style_and_keeps_the_answers(style: str, fused_op: str) -> None:
    hone_pass = FuseAttentionPass()
    original, fused, modified = _apply(hone_pass, _attention_text(style))
    assert modified and hone_pass.matched == 1 and hone_pass.missed == []
    ops = [(n.domain, n.op_type) for n in fused.graph.node]
    expected = [("com.microsoft", fused_op)] + ([("", "IsNaN"), ("", "Where")] if style == "sdpa" else [])
    if fused_op == "MultiHeadAttention":  # q, k, v projections stay outside the fused node
        assert sorted(ops[:6]) == sorted([("", "MatMul")] * 3 + [("", "Add")] * 3)
        ops = ops[6:]
    assert ops == expected
    attention = next(n for n in fused.graph.node if n.op_type == fused_op)
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in attention.attribute}
    assert attributes["num_heads"] == HEADS and attributes["scale"] == pytest.approx(0.5, rel=1e-6)
    feeds = _feeds(original)
    before, after = _run(original, feeds), _run(fused, feeds)
    np.testing.assert_allclose(after[0], before[0], rtol=1e-5, atol=1e-5)  # NaN where the original has NaN
    if style == "sdpa":  # the guard turns the fully masked batch row into zeros, in both
        assert not np.isnan(after[0]).any() and not after[0][1].any()
    onnx.checker.check_model(fused, full_check=True)


def test_attention_with_a_run_time_reshape_target_is_reported_missed_with_the_reason() -> None:
    text = _attention_text("eager").replace("qr = Reshape (q, split)", "qr = Reshape (q, dynamic_split)").replace(
        "v4 = Transpose <perm = [0, 2, 1, 3]> (vr)",
        "v4 = Transpose <perm = [0, 2, 1, 3]> (vr)\n            dynamic_split = Identity (split)")
    hone_pass = FuseAttentionPass()
    _, _, modified = _apply(hone_pass, text)
    assert not modified and hone_pass.matched == 0
    assert len(hone_pass.missed) == 1 and "query reshape target" in hone_pass.missed[0]


def test_attention_whose_scores_are_also_a_graph_output_is_left_alone() -> None:
    text = _attention_text("eager").replace("=> (float[N, S, 8] y)", "=> (float[N, S, 8] y, float[N, 2, S, S] s)")
    hone_pass = FuseAttentionPass()
    _, _, modified = _apply(hone_pass, text)
    assert not modified and "used outside the attention pattern" in hone_pass.missed[0]


RUNTIME_RESHAPE = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, S, 8] x) => (float[N, S, 2, 4] y) <int64 zero = {0}, int64 one = {1}, int64[1] axis = {0},
                                                  int64[2] heads = {2, 4}> {
        shape = Shape (x)
        n = Gather (shape, zero)
        s = Gather (shape, one)
        n1 = Unsqueeze (n, axis)
        s1 = Unsqueeze (s, axis)
        target = Concat <axis = 0> (n1, s1, heads)
        r = Reshape (x, target)
        back = Shape (r)
        same = Expand (r, back)
        y = Relu (same)
    }"""


def test_a_run_time_reshape_target_becomes_a_constant_and_its_shape_nodes_go() -> None:
    hone_pass = SimplifyShapesPass()
    original, simplified, modified = _apply(hone_pass, RUNTIME_RESHAPE)
    assert modified and hone_pass.missed == []
    assert [n.op_type for n in simplified.graph.node] == ["Reshape", "Relu"]  # the Expand changed nothing
    target = next(i for i in simplified.graph.initializer if i.name == simplified.graph.node[0].input[1])
    assert onnx.numpy_helper.to_array(target).tolist() == [0, 0, 2, 4]
    feeds = {"x": np.random.default_rng(0).standard_normal((3, 7, 8)).astype(np.float32)}
    np.testing.assert_array_equal(_run(simplified, feeds)[0], _run(original, feeds)[0])
    onnx.checker.check_model(simplified, full_check=True)


def test_an_attention_scale_computed_from_a_run_time_shape_is_folded_before_attention_is_fused(tmp_path) -> None:
    # Optimum's GPT-2 (SDPA, TorchScript): q's reshape target is built from Shape(x) at run time, and
    # the scale is sqrt(1 / sqrt(q.shape[-1])): only a constant once simplify_shapes knows that dim
    text = _attention_text("sdpa").replace("qr = Reshape (q, split)", """
            shape = Shape (x)
            lead = Slice (shape, begin, two)
            target = Concat <axis = 0> (lead, heads)
            qr = Reshape (q, target)""").replace("qs = Mul (q4, root)", """
            qshape = Shape (q4)
            width = Slice (qshape, back, end)
            widthf = Cast <to = 1> (width)
            root_d = Sqrt (widthf)
            inverse = Div (unit, root_d)
            root_q = Sqrt (inverse)
            qs = Mul (q4, root_q)""").replace("ks = Mul (kt, root)", "ks = Mul (kt, root_q)").replace(
        "float zero = {0.0}>",
        f"float zero = {{0.0}}, float unit = {{1.0}}, int64[1] begin = {{0}}, int64[1] two = {{2}}, "
        f"int64[1] back = {{-1}}, int64[1] end = {{9223372036854775807}}, int64[2] heads = {{{HEADS}, {HEAD_SIZE}}}>")
    path = tmp_path / "attention.onnx"
    onnx.save(onnx.parser.parse_model(text), path)
    optimized, result = hone.optimize(str(path), target="ort-cpu")
    assert result.verified
    ops = [n.op_type for n in optimized.ir.graph]
    assert "Attention" in ops and "Softmax" not in ops and "Sqrt" not in ops, ops


# Phi-3's rotary: q[..., :cos.shape[-1]] rotated, q[..., cos.shape[-1]:] (empty here) put back after it
SHAPE_BOUND_SLICES = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 4, S, 16] q, float[N, 1, S, 16] cos) => (float[N, 4, S, 16] y)
      <int64 last = {3}, int64[1] axis0 = {0}, int64[1] axes = {3}, int64[1] begin = {0},
       int64[1] end = {9223372036854775807}, int64[1] start = {-9223372036854775807}, int64[1] back = {-1}> {
        shape = Shape (cos)
        width = Gather (shape, last)
        bound = Unsqueeze (width, axis0)
        rotated = Slice (q, begin, bound, axes)
        rest = Slice (q, bound, end, axes)
        reversed = Slice (q, end, start, axes, back)
        scaled = Mul (rotated, cos)
        y0 = Concat <axis = -1> (scaled, rest)
        y = Add (y0, reversed)
    }"""


def test_shape_derived_bounds_become_constants_and_whole_or_empty_slices_go() -> None:
    hone_pass = SimplifyShapesPass()
    original, simplified, modified = _apply(hone_pass, SHAPE_BOUND_SLICES)
    assert modified and hone_pass.missed == []
    ops = [n.op_type for n in simplified.graph.node]
    # the bound is 16 (cos's static last dim): the Shape arithmetic, the Slice of the whole axis and
    # the empty one go with the Concat; the reversing Slice keeps q's shape but is not q, so it stays
    assert ops == ["Slice", "Mul", "Add"], ops
    rng = np.random.default_rng(0)
    for n, s in ((1, 3), (2, 5)):
        feeds = {
            "q": rng.standard_normal((n, 4, s, 16)).astype(np.float32),
            "cos": rng.standard_normal((n, 1, s, 16)).astype(np.float32),
        }
        np.testing.assert_array_equal(_run(simplified, feeds)[0], _run(original, feeds)[0])
    onnx.checker.check_model(simplified, full_check=True)


@pytest.mark.parametrize(("in_shape", "out_shape", "expected"), [
    (["batch", "sequence", 384], ["batch", "sequence", 12, 32], [0, 0, 12, 32]),
    (["batch", "sequence", 12, 32], ["batch", "sequence", 384], [0, 0, 384]),
    (["batch", "sequence"], ["batch*sequence", 1], [-1, 1]),
    (["batch*sequence"], ["batch", 1, 1, "sequence"], None),  # two dims to invent: no constant says it
    (["batch", 4], ["batch", None], None),
])
def test_reshape_targets_use_zero_for_kept_dims_and_minus_one_once(in_shape, out_shape, expected) -> None:
    assert reshape_target(in_shape, out_shape) == expected


CONV_ACTIVATION = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 2, 6, 6] x) => (float[N, 3, 6, 6] y) <float[3, 2, 3, 3] w = {{{w}}}, float[3] b = {{0.1, -0.2, 0.3}},
                                                     float low = {{0.0}}, float high = {{0.5}}> {{
        c = Conv <pads = [1, 1, 1, 1]> (x, w, b)
        y = {activation}
    }}"""


@pytest.mark.parametrize(("activation", "target", "fused"), [
    ("Relu (c)", "ort-cpu", True),
    ("Clip (c, low, high)", "ort-cpu", True),
    ("LeakyRelu <alpha = 0.2> (c)", "ort-cpu", True),
    ("HardSigmoid <alpha = 0.3, beta = 0.4> (c)", "ort-cpu", True),
    ("Relu (c)", "ort-cuda", True),
    ("Sigmoid (c)", "ort-cuda", False),  # onnxruntime's CUDA FusedConv has Relu only
])
def test_conv_and_its_activation_become_one_fused_conv(activation: str, target: str, fused: bool) -> None:
    text = CONV_ACTIVATION.format(w=_floats((3, 2, 3, 3), 7), activation=activation)
    original, rewritten, modified = _apply(FuseActivationPass(target), text)
    assert modified is fused
    if not fused:
        return
    assert [(n.domain, n.op_type) for n in rewritten.graph.node] == [("com.microsoft", "FusedConv")]
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 2, 6, 6)).astype(np.float32)}
    np.testing.assert_allclose(_run(rewritten, feeds)[0], _run(original, feeds)[0], rtol=1e-5, atol=1e-6)
    onnx.checker.check_model(rewritten, full_check=True)


def test_gemm_and_relu_become_fused_gemm() -> None:
    text = f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 3] y) <float[4, 3] w = {{{_floats((4, 3), 3)}}}, float[3] b = {{0.1, 0.2, -0.3}}> {{
            h = Gemm (x, w, b)
            y = Relu (h)
        }}"""
    original, rewritten, modified = _apply(FuseActivationPass("ort-cpu"), text)
    assert modified and [n.op_type for n in rewritten.graph.node] == ["FusedGemm"]
    feeds = {"x": np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)}
    np.testing.assert_allclose(_run(rewritten, feeds)[0], _run(original, feeds)[0], rtol=1e-5, atol=1e-6)


def test_a_conv_whose_output_is_also_used_elsewhere_is_not_fused() -> None:
    text = CONV_ACTIVATION.format(w=_floats((3, 2, 3, 3), 7), activation="Relu (c)").replace(
        "=> (float[N, 3, 6, 6] y)", "=> (float[N, 3, 6, 6] y, float[N, 3, 6, 6] c)")
    _, _, modified = _apply(FuseActivationPass("ort-cpu"), text)
    assert not modified


@pytest.mark.slow
@pytest.mark.parametrize("name", ["minilm", "minilm-eager"])
def test_both_minilm_exports_get_every_attention_fused_and_keep_their_answers(name: str) -> None:
    optimized, result = hone.optimize(name, target="ort-cpu")
    attention = next(p for p in result.passes if p.name == "fuse_attention")
    assert attention.status == "applied" and attention.matched == 6 and attention.missed == []
    assert result.op_counts_after.get("com.microsoft::Attention") == 6
    assert "Softmax" not in result.op_counts_after
    assert result.nodes_after < result.nodes_before / 4
    assert result.verified and not result.rolled_back


RESIDUAL = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 3, 6, 6] x) => (float[N, 3, 6, 6] y) <float[3, 3, 3, 3] w = {{{w}}}, float[3] b = {{0.1, -0.2, 0.3}}> {{
        c = Conv <pads = [1, 1, 1, 1]> (x, w, b)
        s = Add ({order})
        y = Relu (s)
    }}"""


@pytest.mark.parametrize("order", ["c, x", "x, c"])
def test_a_residual_add_and_relu_after_a_conv_become_the_fused_convs_sum_input(order: str) -> None:
    text = RESIDUAL.format(w=_floats((3, 3, 3, 3), 5), order=order)
    original, rewritten, modified = _apply(FuseActivationPass("ort-cpu"), text)
    assert modified and [n.op_type for n in rewritten.graph.node] == ["FusedConv"]
    assert list(rewritten.graph.node[0].input) == ["x", "w", "b", "x"]
    feeds = {"x": np.random.default_rng(4).standard_normal((2, 3, 6, 6)).astype(np.float32)}
    np.testing.assert_allclose(_run(rewritten, feeds)[0], _run(original, feeds)[0], rtol=1e-5, atol=1e-5)


def test_a_residual_that_would_broadcast_is_not_fused() -> None:
    text = RESIDUAL.format(w=_floats((3, 3, 3, 3), 5), order="c, r").replace(
        "float[N, 3, 6, 6] x)", "float[N, 3, 6, 6] x, float[1, 3, 1, 1] r)")
    _, rewritten, _ = _apply(FuseActivationPass("ort-cpu"), text)
    assert [n.op_type for n in rewritten.graph.node] == ["Conv", "Add", "Relu"]
