"""A decoder .onnx that hone did not write (Optimum's names and dims, no hone metadata), adopted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx_ir as ir
import pytest
from tests.generate import decoders

from hone.errors import InvalidModelError, OptionError
from hone.generate.adopt import adopt
from hone.generate.decoder import Decoder, is_generative
from hone.generate.types import CHAT_TEMPLATE_KEY, LAYOUT_KEY, TOKENIZER_KEY
from hone.model import load_onnx_file

# Optimum's dim names for a decoder exported with its past (text-generation-with-past).
OPTIMUM_DIMS = {
    "batch": "batch_size",
    "sequence": "sequence_length",
    "past_sequence": "past_sequence_length",
    "total_sequence": "past_sequence_length + 1",
}
PROMPTS = [[5, 6, 7], [9, 10, 11, 12, 13, 14]]


def _as_third_party(hone_file: Path, target: Path, edit=None) -> Path:
    """hone's GPT-2 export with hone's metadata stripped and Optimum's dim names."""
    model = ir.load(hone_file)
    model.metadata_props.clear()
    for value in [*model.graph.inputs, *model.graph.outputs]:
        if value.shape is not None:
            dims = [d if isinstance(d, int) else ir.SymbolicDim(OPTIMUM_DIMS[d.value]) for d in value.shape]
            value.shape = ir.Shape(dims)
    for node in model.graph:
        for value in node.outputs:
            if value not in model.graph.outputs:
                value.shape = None
    if edit is not None:
        edit(model)
    ir.save(model, target)
    return target


@pytest.fixture(scope="module")
def optimum_folder(gpt2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("optimum-gpt2")
    _as_third_party(gpt2_path, folder / "model.onnx")
    config = {"architectures": ["GPT2LMHeadModel"], "n_positions": 256, "eos_token_id": 0}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [0, 3]}))
    (folder / "tokenizer.json").write_text(decoders.byte_tokenizer().to_str())
    template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    return folder


def test_an_optimum_style_decoder_is_adopted_through_the_cli(
    optimum_folder: Path, gpt2_decoder: Decoder, tmp_path: Path
) -> None:
    source = optimum_folder / "model.onnx"
    before = source.read_bytes()
    out = tmp_path / "adopted.onnx"
    command = [sys.executable, "-m", "hone.cli", "export", str(source), "--target", "generate", "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "adopted GPT2LMHeadModel" in done.stdout and "context 256" in done.stdout
    assert source.read_bytes() == before  # the user's file is only read
    model = load_onnx_file(out)
    assert is_generative(model)
    layout = json.loads(model.ir.metadata_props[LAYOUT_KEY])
    assert (layout["layers"], layout["kv_heads"], layout["head_dim"]) == (2, 4, 16)
    assert (layout["vocab_size"], layout["eos_token_ids"]) == (decoders.VOCAB, [0, 3])
    assert TOKENIZER_KEY in model.ir.metadata_props and CHAT_TEMPLATE_KEY in model.ir.metadata_props
    assert model.default_dims == {"sequence_length": 8, "past_sequence_length": 4, "past_sequence_length + 1": 12}
    decoder = Decoder(model, threads=2)
    assert decoder.tokenizer is not None
    assert decoder.greedy(PROMPTS, 12) == gpt2_decoder.greedy(PROMPTS, 12)


def test_an_adopted_decoder_optimizes_with_its_own_dim_names(optimum_folder: Path, tmp_path: Path) -> None:
    import hone

    out = adopt(optimum_folder / "model.onnx", tmp_path / "adopted.onnx").path
    reference = Decoder.load(out, threads=2).greedy(PROMPTS, 12)
    optimized, result = hone.optimize(str(out), target="ort-cpu")
    assert result.nodes_after < result.nodes_before
    assert Decoder(optimized, threads=2).greedy(PROMPTS, 12) == reference


def test_a_context_is_needed_and_can_be_given(optimum_folder: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.onnx").write_bytes((optimum_folder / "model.onnx").read_bytes())
    with pytest.raises(OptionError, match="context length .* is unknown.*--context N"):
        adopt(bare / "model.onnx", tmp_path / "a.onnx")
    assert not (tmp_path / "a.onnx").exists()
    adopted = adopt(bare / "model.onnx", tmp_path / "b.onnx", context=64)
    assert adopted.layout.max_context == 64 and adopted.layout.architecture == "model"
    assert adopted.found_beside == ()


def test_inputs_hone_cannot_feed_are_refused_in_one_line(gpt2_path: Path, tmp_path: Path) -> None:
    def add_branch_flag(model: ir.Model) -> None:
        flag = ir.Value(name="use_cache_branch", type=ir.TensorType(ir.DataType.BOOL), shape=ir.Shape([1]))
        model.graph.inputs.append(flag)

    source = _as_third_party(gpt2_path, tmp_path / "merged.onnx", add_branch_flag)
    with pytest.raises(InvalidModelError, match="inputs hone cannot feed: use_cache_branch") as caught:
        adopt(source, tmp_path / "out.onnx", context=64)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out.onnx").exists()
    with pytest.raises(OptionError, match="never overwrites"):
        adopt(source, source, context=64, force=True)


def test_a_cache_that_does_not_carry_the_past_is_refused_and_nothing_is_written(
    gpt2_path: Path, tmp_path: Path
) -> None:
    def swap_first_key_and_value(model: ir.Model) -> None:
        outputs = model.graph.outputs
        key, value = outputs[1], outputs[2]
        key.name, value.name = "swapped", "present.0.key"
        key.name = "present.0.value"
        outputs[1], outputs[2] = value, key

    source = _as_third_party(gpt2_path, tmp_path / "swapped.onnx", swap_first_key_and_value)
    with pytest.raises(InvalidModelError, match="does not give the tokens of recomputing"):
        adopt(source, tmp_path / "out.onnx", context=64)
    assert not (tmp_path / "out.onnx").exists()
