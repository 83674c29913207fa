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
