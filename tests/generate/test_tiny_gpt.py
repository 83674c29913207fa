"""The zoo's tiny_gpt (trained on Python's own docs) and int4/int8 behind the generative gate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hone.errors import OptionError
from hone.generate import evaluate
from hone.generate import tiny_gpt as tiny
from hone.generate.decoder import Decoder, is_generative
from hone.model import Model, load_onnx_file
from hone.quantize.generative import GenerativeBudget, quantize_generative
from hone.quantize.weight_only import gemm_as_matmul, int4, int4_matmuls


def test_tiny_gpt_is_trained_within_its_bound_and_learned_the_held_out_text(tiny_gpt: Model) -> None:
    record = tiny.trained().record
    assert record.seconds <= tiny.TIME_LIMIT_S + 5 and record.steps > 0
    # a model that learned nothing scores about the vocabulary size (2048) on held-out text
    assert record.heldout_perplexity < tiny.VOCAB / 4
    assert tiny_gpt.provenance["heldout_perplexity"].startswith(f"{record.heldout_perplexity:.2f}")
    assert is_generative(tiny_gpt)
    split = tiny.corpus()
    assert not set(split.heldout) & set(split.train)  # the held-out documents are never trained on


def test_held_out_perplexity_of_the_onnx_decoder_matches_pytorchs(tiny_gpt: Model) -> None:
    decoder = Decoder(tiny_gpt, threads=2)
    text = evaluate.eval_text(decoder, None)
    onnx_ppl = evaluate.perplexity(decoder, text.windows)
    torch_ppl = tiny.perplexity(tiny.trained().model, text.windows)
    assert onnx_ppl == pytest.approx(torch_ppl, rel=1e-4)


def test_gemm_as_matmul_keeps_every_output(tiny_gpt: Model) -> None:
    rewritten = gemm_as_matmul(tiny_gpt)
    assert not any(n.op_type == "Gemm" for n in rewritten.ir.graph)
    assert len(int4_matmuls(rewritten)) == 4 * 4 + 1  # 4 per layer and the head
    ids = np.asarray([[5, 9, 200, 17, 3]], np.int64)
    mask, positions = np.ones_like(ids), np.arange(5)[None]
    before = Decoder(tiny_gpt).step(ids, mask, positions, Decoder(tiny_gpt).empty_past(1))
    after = Decoder(rewritten).step(ids, mask, positions, Decoder(rewritten).empty_past(1))
    np.testing.assert_allclose(after.last_logits, before.last_logits, rtol=1e-4, atol=1e-4)
    for a, b in zip(after.presents, before.presents, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_int4_candidates_are_judged_on_perplexity_and_tokens(tiny_gpt: Model) -> None:
    kept, result = quantize_generative(tiny_gpt, mode="int4", measure_speed=False, threads=2)
    names = [c.name for c in result.candidates]
    assert names == ["int4-rtn", "int4-hqq"]
    for candidate in result.candidates:
        within = candidate.perplexity_increase <= 0.03 and candidate.agreement >= 0.95
        assert candidate.passed == within
        assert candidate.size_bytes < result.size_bytes_before / 2  # 4-bit weights
    assert result.kept in names and any(c.chosen for c in result.candidates)
    assert any(n.op_type == "MatMulNBits" for n in kept.ir.graph)
    assert is_generative(kept)  # the layout and tokenizer travel along
    assert Decoder(kept).tokenizer is not None


def test_a_tight_budget_keeps_the_most_sensitive_matmuls_float(tiny_gpt: Model) -> None:
    full = quantize_generative(tiny_gpt, mode="int4", measure_speed=False, threads=2)[1].candidates[0]
    budget = f"perplexity=+{full.perplexity_increase * 100 / 2:.4f}%,tokens=100%"
    kept, result = quantize_generative(tiny_gpt, mode="int4", budget=budget, measure_speed=False, threads=2)
    rtn = result.candidates[0]
    assert rtn.kept_float, "the whole-model candidate was over this budget, so the fallback must run"
    assert rtn.passed == (rtn.perplexity_increase <= full.perplexity_increase / 2 and rtn.agreement == 1.0)
    if rtn.passed:
        remaining = sum(n.op_type == "MatMulNBits" for n in kept.ir.graph) if rtn.chosen else None
        assert remaining is None or remaining == 17 - len(rtn.kept_float)
    else:
        assert len(rtn.kept_float) == 8  # gave up at half the MatMuls


def test_int8_and_the_speed_race(tiny_gpt: Model) -> None:
    kept, result = quantize_generative(tiny_gpt, mode="int8", threads=2)
    (candidate,) = result.candidates
    assert candidate.name == "int8-dynamic" and candidate.passed
    assert result.float_tokens_per_s and candidate.tokens_per_s and candidate.speedup
    if candidate.chosen:
        assert kept is not tiny_gpt and result.speedup == candidate.speedup
    else:
        assert kept is tiny_gpt and "float model is kept" in " ".join(result.notes)


def test_budget_syntax() -> None:
    assert GenerativeBudget.parse("perplexity=+5%,tokens=90%") == GenerativeBudget(0.05, 0.9)
    assert GenerativeBudget.parse("tokens=0.99").min_token_agreement == 0.99
    with pytest.raises(OptionError, match="perplexity=\\+N%"):
        GenerativeBudget.parse("top1-drop=1")


def test_block_size_is_checked(tiny_gpt: Model) -> None:
    from hone.quantize.int8 import QuantizationError

    with pytest.raises(QuantizationError, match="block-size 48"):
        int4(tiny_gpt, block_size=48)


def _hone(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hone.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_quantize_int4_writes_a_servable_decoder_and_json(tiny_gpt: Model, tmp_path: Path) -> None:
    out, report = tmp_path / "q.onnx", tmp_path / "q.json"
    text = tmp_path / "heldout.txt"
    text.write_text("\n\n".join(tiny.heldout_texts()[:40]))
    options = ["--mode", "int4", "--no-speed", "--data", str(text), "--block-size", "64"]
    done = _hone("quantize", "tiny_gpt", "-o", str(out), "--json", str(report), *options)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "int4-rtn" in done.stdout and "perplexity" in done.stdout
    data = json.loads(report.read_text())
    assert data["block_size"] == 64 and str(text) in data["data"]  # measured on the text given
    assert is_generative(load_onnx_file(out))


def test_cli_refuses_int4_for_a_model_that_does_not_generate(mlp_path: Path, tmp_path: Path) -> None:
    done = _hone("quantize", str(mlp_path), "--mode", "int4", "-o", str(tmp_path / "x.onnx"))
    assert done.returncode != 0
    assert "is for generative models" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_cli_exports_tiny_gpt_for_generation(tiny_gpt: Model, tmp_path: Path) -> None:
    out = tmp_path / "tiny_gpt.onnx"
    done = _hone("export", "tiny_gpt", "--target", "generate", "-o", str(out))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "greedy tokens identical to PyTorch" in done.stdout
    assert Decoder(load_onnx_file(out)).tokenizer is not None
