"""`hone optimize` on exported decoders: attention with a KV cache, rotary embeddings and RMSNorm
fused into onnxruntime's ops, each pass verified, and the graph's answers kept for any batch,
padding and past length (the greedy tokens of prefill + decode, and a chunk over a past)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from tests.generate import decoders

import hone
from hone.generate.decoder import Decoder
from hone.generate.export import decoder_source, export_decoder
from hone.generate.types import LAYOUT_KEY
from hone.model import check_onnx, load_onnx_file
from hone.passes.fuse_rms_norm import FuseRmsNormPass

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [100, 3], [42, 43, 44, 45], [250]]
ROTARY = {"gpt2": False, "llama": True, "qwen2": True, "phi": True, "phi3": True, "neox": True}
# Phi, GPT-2 and GPT-NeoX use LayerNorm
RMS_NORM = {"gpt2": False, "llama": True, "qwen2": True, "phi": False, "phi3": True, "neox": False}


def _export(tmp_path: Path, architecture: str) -> Path:
    path = tmp_path / f"{architecture}.onnx"
    export_decoder(decoder_source(getattr(decoders, architecture)(), architecture), path)
    return path


def _ops(model: hone.Model) -> Counter[str]:
    return Counter(node.op_type for node in model.ir.graph)


def _chunk_over_a_past(path: Path, batch: int = 3, past: int = 5, new: int = 4) -> list[np.ndarray]:
    """One step of ``new`` tokens over a random past for ``batch`` rows, the second left padded by 3:
    the step continuous batching would run if a chunk joined running sequences."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    mask = np.ones((batch, past + new), np.int64)
    mask[1, :3] = 0
    feeds: dict[str, np.ndarray] = {
        "input_ids": rng.integers(0, decoders.VOCAB, (batch, new)),
        "attention_mask": mask,
        "position_ids": np.maximum(np.cumsum(mask, axis=1) - 1, 0)[:, past:],
    }
    for spec in session.get_inputs():
        if spec.name.startswith("past_key_values"):
            heads, head_dim = spec.shape[1], spec.shape[3]
            feeds[spec.name] = rng.standard_normal((batch, heads, past, head_dim)).astype(np.float32)
    return session.run(None, feeds)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", sorted(ROTARY))
def test_decoder_fusions_match_and_keep_the_answers(tmp_path: Path, architecture: str) -> None:
    path = _export(tmp_path, architecture)
    optimized, result = hone.optimize(str(path), target="ort-cpu")
    report = {p.name: p for p in result.passes}
    ops = _ops(optimized)
    layers = 2
    # attention with past: one MultiHeadAttention per layer, no Softmax left, nothing reported missed
    assert report["fuse_attention"].status == "applied" and report["fuse_attention"].matched == layers
    assert ops["MultiHeadAttention"] == layers and ops["Softmax"] == 0
    assert not report["fuse_attention"].missed
    if ROTARY[architecture]:  # q and k of every layer (Phi's partial rotary included)
        assert report["fuse_rotary"].matched == 2 * layers and ops["RotaryEmbedding"] == 2 * layers
        assert not any(op in ops for op in ("Sin", "Cos", "Neg"))
    else:
        assert report["fuse_rotary"].status == "no_change" and "RotaryEmbedding" not in ops
    if RMS_NORM[architecture]:  # two per layer and the final one; residual Adds folded in after
        assert report["fuse_rms_norm"].matched == 2 * layers + 1
        norms = ops["SimplifiedLayerNormalization"] + ops["SkipSimplifiedLayerNormalization"]
        assert norms == 2 * layers + 1 and ops["SkipSimplifiedLayerNormalization"] >= 2 * layers - 1
        assert "ReduceMean" not in ops and "Sqrt" not in ops
    # the written file loads (onnx's checker, knowing onnxruntime's default-domain ops) and answers
    # like the original: greedy tokens alone and batched with left padding over 64 steps ...
    saved = optimized.save(tmp_path / "optimized.onnx")
    check_onnx(saved, full_check=True)
    fused, plain = Decoder.load(saved, threads=2), Decoder.load(path, threads=2)
    assert fused.greedy(PROMPTS, 64) == plain.greedy(PROMPTS, 64)
    assert fused.greedy(PROMPTS[1:2], 64) == plain.greedy(PROMPTS[1:2], 64)
    # ... and a chunk of new tokens over a past in a padded batch, every output (logits, presents)
    for got, want in zip(_chunk_over_a_past(saved), _chunk_over_a_past(path), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_rotary_needs_the_context_length_and_says_so(tmp_path: Path) -> None:
    path = _export(tmp_path, "llama")
    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key != LAYOUT_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, str(path))
    optimized, result = hone.optimize(str(path), target="ort-cpu")
    rotary = next(p for p in result.passes if p.name == "fuse_rotary")
    assert rotary.matched == 0 and len(rotary.missed) == 4
    assert all("the context length is unknown" in line for line in rotary.missed)
    assert "RotaryEmbedding" not in _ops(optimized)
    assert _ops(optimized)["MultiHeadAttention"] == 2  # attention still fuses, its query merged back


RMS_VARIANTS = {
    # opset 18: ReduceMean's axes as an input; x * (1 / sqrt) and a weight on the right
    "reciprocal_by_div": (
        18,
        "ms = ReduceMean <keepdims = 1> (sq, axes)\n a = Add (ms, eps)\n r = Sqrt (a)\n"
        " inv = Div (one, r)\n n = Mul (x, inv)\n y = Mul (n, w)",
    ),
    # opset 17: x / sqrt, weight on the left
    "divide": (
        17,
        "ms = ReduceMean <axes = [-1], keepdims = 1> (sq)\n a = Add (eps, ms)\n r = Sqrt (a)\n"
        " n = Div (x, r)\n y = Mul (w, n)",
    ),  # fmt: skip
    # no weight at all; Reciprocal
    "no_weight": (
        17,
        "ms = ReduceMean <axes = [2], keepdims = 1> (sq)\n a = Add (ms, eps)\n r = Sqrt (a)\n"
        " inv = Reciprocal (r)\n y = Mul (x, inv)",
    ),  # fmt: skip
}


@pytest.mark.parametrize("variant", sorted(RMS_VARIANTS))
def test_rms_norm_forms_fuse_and_keep_the_numbers(variant: str) -> None:
    opset, body = RMS_VARIANTS[variant]
    text = f"""
        <ir_version: 8, opset_import: ["" : {opset}]>
        g (float[2, 3, 8] x) => (float[2, 3, 8] y)
          <float[8] w = {{1.0, 2.0, 3.0, 4.0, 0.5, 0.25, 1.5, 2.5}}, float eps = {{1e-6}},
           float one = {{1.0}}, int64[1] axes = {{-1}}, float two = {{2.0}}> {{
            sq = Pow (x, two)
            {body}
        }}
    """
    proto = onnx.parser.parse_model(text)
    x = np.random.default_rng(0).standard_normal((2, 3, 8)).astype(np.float32)
    want = ort.InferenceSession(proto.SerializeToString()).run(None, {"x": x})[0]
    model = ir.serde.deserialize_model(proto)
    fusion = FuseRmsNormPass()
    fusion(model)
    assert fusion.matched == 1 and not fusion.missed
    assert [n.op_type for n in model.graph] == ["SimplifiedLayerNormalization"]
    fused = ir.serde.serialize_model(model)
    check_onnx(fused)
    got = ort.InferenceSession(fused.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_layer_norm_mean_is_not_taken_for_an_rms_norm() -> None:
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 8] x) => (float[2, 8] y) <float eps = {1e-5}> {
            mu = ReduceMean <axes = [-1], keepdims = 1> (x)
            d = Sub (x, mu)
            sq = Mul (d, d)
            var = ReduceMean <axes = [-1], keepdims = 1> (sq)
            a = Add (var, eps)
            r = Sqrt (a)
            y = Div (d, r)
        }
    """)
    model = ir.serde.deserialize_model(proto)
    fusion = FuseRmsNormPass()
    fusion(model)
    # a LayerNorm's variance is the mean square of x - mean(x): left whole for fuse_transformer,
    # which makes it one LayerNormalization (an RMSNorm of x - mean(x) would split it in two)
    assert fusion.matched == 0
    assert "SimplifiedLayerNormalization" not in [n.op_type for n in model.graph]


def test_the_onnx_checker_knows_onnxruntimes_default_domain_norm(tmp_path: Path) -> None:
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 8] x) => (float[2, 8] y) <float[8] w = {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0}> {
            y = SimplifiedLayerNormalization <axis = -1, epsilon = 1e-6> (x, w)
        }
    """)
    path = tmp_path / "norm.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(str(path))
    assert load_onnx_file(path).ir.graph.node(0).op_type == "SimplifiedLayerNormalization"


def test_a_negation_that_is_no_rotary_is_not_reported_as_a_missed_one() -> None:
    from hone.passes.fuse_rotary import FuseRotaryPass

    model = ir.serde.deserialize_model(
        onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 8] x) => (float[8, 2] y) {
            n = Neg (x)
            y = Transpose <perm = [1, 0]> (n)
        }
    """)
    )
    fusion = FuseRotaryPass()
    fusion(model)
    assert fusion.matched == 0 and fusion.missed == []
