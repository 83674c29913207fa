"""Shared fixtures: a hermetic hone cache for the whole session, small ONNX models, a CLI runner."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

# hone.kernels.triton runs through Triton's interpreter on the CPU in tests; Triton reads this when
# the kernels are decorated, so it is set before any test module imports them.
os.environ["TRITON_INTERPRET"] = "1"

# The zoo exports and trained weights go to one cache per test session, never the user's.
if "HONE_TEST_KEEP_CACHE" not in os.environ:
    os.environ["HONE_CACHE_DIR"] = str(Path(__file__).parent.parent / ".pytest_cache" / "hone-cache")

SMALL_MLP_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
mlp (float[batch, 4] x) => (float[batch, 3] y) <float[4, 3] w1 = {0.5, -0.25, 1.0, 0.75, 0.1, -0.6, -0.3, 0.2, 0.9, 0.4, -0.8, 0.05}, float[3] b1 = {0.1, -0.2, 0.3}> {
    h = MatMul(x, w1)
    z = Add(h, b1)
    y = Relu(z)
}
"""


def small_mlp() -> onnx.ModelProto:
    return onnx.parser.parse_model(SMALL_MLP_TEXT)


@pytest.fixture
def mlp_path(tmp_path: Path) -> Path:
    path = tmp_path / "mlp.onnx"
    onnx.save(small_mlp(), path)
    return path


@pytest.fixture
def external_data_model(tmp_path: Path) -> Path:
    """An .onnx file whose weight lives in ``weights.bin`` beside it."""
    folder = tmp_path / "ext"
    folder.mkdir()
    model = small_mlp()
    weight = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(weight, "w1"))
    path = folder / "model.onnx"
    onnx.save(model, path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    return path


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Run ``hone ARGS...`` in-process through the real entry point (error handling included)."""
    from hone.cli import main

    def invoke(*args: str) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["hone", *args])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    yield invoke
