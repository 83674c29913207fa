"""Tiny ONNX models and a recording runner for the serving tests.

``recorder``: y = Relu(x[N, 8] @ W) plus ``rows`` ([N, 1], every value N), so a test can see the
size of the batch each request ran in. ``RecordingRunner`` logs the first column of every batch it
runs (tests put a request id there), can hold its instance busy until a gate opens (so requests
pile up in the queue without any timing), and fails any batch holding a poison value.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

from hone.model import Model, load_onnx_file
from hone.serve.model_runner import ModelRunner

WEIGHTS = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
POISON = 666.0
_GATE_TIMEOUT_S = 10


def _floats(values: np.ndarray) -> str:
    return ", ".join(repr(float(v)) for v in values.ravel())


RECORDER_TEXT = f"""
<ir_version: 8, opset_import: ["" : 17]>
recorder (float[N, 8] x) => (float[N, 4] y, float[N, 1] rows)
    <float[8, 4] w = {{{_floats(WEIGHTS)}}}, int64[1] zero = {{0}}, int64[1] one = {{1}}> {{
    h = MatMul(x, w)
    y = Relu(h)
    n = Shape <start = 0, end = 1> (x)
    nf = Cast <to = 1> (n)
    col = Slice(x, zero, one, one)
    colz = Sub(col, col)
    rows = Add(colz, nf)
}}
"""

# Any width D: requests of different widths cannot share a batch.
WIDTH_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
width (float[N, D] x) => (float[N, 1] total, float[N, 1] rows) <int64[1] zero = {0}, int64[1] one = {1}> {
    total = ReduceSum <keepdims = 1> (x, one)
    n = Shape <start = 0, end = 1> (x)
    nf = Cast <to = 1> (n)
    col = Slice(x, zero, one, one)
    colz = Sub(col, col)
    rows = Add(colz, nf)
}
"""

# Sums over the batch: its output has one row whatever the batch, which batching must refuse.
BATCH_SUM_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
batch_sum (float[N, 8] x) => (float[1, 8] total) <int64[1] zero = {0}> {
    total = ReduceSum <keepdims = 1> (x, zero)
}
"""

FIXED_BATCH_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
fixed (float[1, 8] x) => (float[1, 8] y) {
    y = Relu(x)
}
"""

TWO_INPUTS_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
pair (float[N, 8] x, int64[N, 3] ids) => (float[N, 8] y, int64[N, 3] z) {
    y = Relu(x)
    z = Identity(ids)
}
"""


def save_model(text: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(onnx.parser.parse_model(text), path)
    return path


def load_model(text: str, folder: Path, name: str) -> Model:
    return load_onnx_file(save_model(text, folder / f"{name}.onnx"))


def request(request_id: float, rows: int = 1, width: int = 8) -> dict[str, np.ndarray]:
    """``rows`` samples whose first column is ``request_id`` (what RecordingRunner logs)."""
    x = np.random.default_rng(int(request_id)).standard_normal((rows, width)).astype(np.float32)
    x[:, 0] = request_id
    return {"x": x}


class RecordingRunner(ModelRunner):
    """A ModelRunner that logs each batch's ids, can be held busy, and fails poisoned batches."""

    def __init__(self, model: Model, **options: object) -> None:
        super().__init__(model, model.name, threads=1, **options)  # type: ignore[arg-type]
        self.batches: list[list[float]] = []
        self.started = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def hold(self) -> None:
        """Make the next batch wait in ``run`` until ``release``."""
        self.started.clear()
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = [float(v) for v in feeds["x"][:, 0]]
        self.batches.append(ids)
        self.started.set()
        if not self.gate.wait(_GATE_TIMEOUT_S):
            raise TimeoutError("the test never released the runner")
        if POISON in ids:
            raise RuntimeError("poisoned batch")
        return super().run(feeds)

    def ran(self, request_id: float) -> bool:
        return any(request_id in batch for batch in self.batches)
