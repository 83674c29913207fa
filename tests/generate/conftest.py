"""An exported seeded GPT-2 decoder with a tokenizer, shared by the generate tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.generate import decoders

from hone.generate.decoder import Decoder
from hone.generate.export import decoder_source, export_decoder
from hone.model import Model
from hone.sources import load_zoo


@pytest.fixture(scope="session")
def gpt2_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gpt2") / "gpt2.onnx"
    export_decoder(decoder_source(decoders.gpt2_with_tokenizer(), "gpt2"), path)
    return path


@pytest.fixture(scope="session")
def gpt2_decoder(gpt2_path: Path) -> Decoder:
    return Decoder.load(gpt2_path, threads=2)


@pytest.fixture(scope="session")
def tiny_gpt() -> Model:
    """The zoo's trained tiny_gpt decoder (trained once per test cache, about 90 s on 2 cores)."""
    return load_zoo("tiny_gpt")


@pytest.fixture(scope="session")
def fused_decoders(gpt2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Decoder]:
    """GPT-2 and Llama (grouped-query attention, rotary, RMSNorm) after hone optimize: the graphs the
    in-place KV cache serves."""
    import hone

    llama = tmp_path_factory.mktemp("llama") / "llama.onnx"
    export_decoder(decoder_source(decoders.llama(), "llama"), llama)
    found = {}
    for name, path in (("gpt2", gpt2_path), ("llama", llama)):
        optimized, _ = hone.optimize(str(path), target="ort-cpu")
        found[name] = Decoder(optimized, threads=2)
    return found
