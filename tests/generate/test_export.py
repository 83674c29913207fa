"""`hone export --target generate`: one graph for prefill and decode, tokens identical to PyTorch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.generate import decoders

from hone.generate.decoder import Decoder, is_generative
from hone.generate.export import decoder_source, export_decoder
from hone.model import load_onnx_file

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [100, 3], [42, 43, 44, 45], [250]]


def torch_greedy(model: torch.nn.Module, prompt: list[int], steps: int) -> list[int]:
    """PyTorch's own greedy answer: the whole sequence recomputed at every step, no cache at all
    (``generate`` would stop at, or with ``min_new_tokens`` suppress, the end-of-sequence token)."""
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        for _ in range(steps):
            token = model(input_ids=ids).logits[0, -1].argmax()
            ids = torch.cat([ids, token.view(1, 1)], dim=1)
    return ids[0, len(prompt) :].tolist()


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["gpt2", "llama", "qwen2", "phi"])
def test_greedy_tokens_match_pytorch_over_64_steps(tmp_path: Path, architecture: str) -> None:
    factory = getattr(decoders, architecture)
    path = tmp_path / "decoder.onnx"
    layout = export_decoder(decoder_source(factory(), architecture), path)
    assert layout.layers == 2
    decoder = Decoder.load(path, threads=2)
    reference = [torch_greedy(factory(), prompt, 64) for prompt in PROMPTS]
    # batch sizes 1 and 4 (prompts of different lengths, left padded in one batch)
    assert decoder.greedy(PROMPTS[:1], 64) == reference[:1]
    assert decoder.greedy(PROMPTS, 64) == reference
    # the tokens are not trivially constant: the test would not notice a broken cache otherwise
    assert all(len(set(tokens)) > 1 for tokens in reference)


def test_layout_and_tokenizer_travel_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "decoder.onnx"
    model, tokenizer = decoders.gpt2_with_tokenizer()
    layout = export_decoder(decoder_source((model, tokenizer), "gpt2"), path)
    loaded = load_onnx_file(path)
    assert is_generative(loaded)
    decoder = Decoder(loaded)
    assert decoder.layout == layout
    assert layout.kv_heads == 4 and layout.head_dim == 16 and layout.max_context == 256
    assert layout.eos_token_ids == (0,)
    assert decoder.tokenizer is not None
    assert decoder.tokenizer.decode(decoder.tokenizer.encode("hello world")) == "hello world"
    names = [i.name for i in loaded.inputs]
    assert names[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert names[3:5] == ["past_key_values.0.key", "past_key_values.0.value"]
    assert [o.name for o in loaded.outputs][:2] == ["logits", "present.0.key"]


def test_a_non_decoder_is_refused_in_one_line() -> None:
    from hone.errors import FactoryError

    with pytest.raises(FactoryError, match="not a transformers causal LM"):
        decoder_source(torch.nn.Linear(2, 2), "f.py:make")


def test_cli_export_target_generate_checks_and_refuses_to_overwrite(tmp_path: Path) -> None:
    import subprocess
    import sys

    factory = f"{Path(decoders.__file__)}:llama"
    out = tmp_path / "llama.onnx"
    command = [sys.executable, "-m", "hone.cli", "export", factory, "--target", "generate", "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "greedy tokens identical to PyTorch on 3 prompts x 16 steps" in done.stdout
    assert is_generative(load_onnx_file(out))
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "already exists" in again.stdout + again.stderr


def test_an_exported_decoder_optimizes_without_dims_and_keeps_its_tokens(
    gpt2_path: Path, gpt2_decoder: Decoder
) -> None:
    import hone

    model = load_onnx_file(gpt2_path)
    assert model.default_dims == {"sequence": 8, "past_sequence": 4, "total_sequence": 12}
    optimized, result = hone.optimize(model, target="ort-cpu")
    assert result.nodes_after < result.nodes_before
    assert is_generative(optimized)
    prompts = PROMPTS
    assert Decoder(optimized, threads=2).greedy(prompts, 24) == gpt2_decoder.greedy(prompts, 24)
