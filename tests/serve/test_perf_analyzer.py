"""``hone serve`` under Triton's own load generator, perf_analyzer, over HTTP and gRPC.

perf_analyzer reads the model's config and statistics (``/v2/models/NAME/config``, ``/stats``)
before it sends a request, and sends binary tensors, so a short bounded run proves hone speaks
enough of Triton's protocol for the tool Triton users already have. It also checks the numbers
agree: hone's own inference count must grow by at least the requests perf_analyzer counted.

perf_analyzer lives in ``.cache/perf-venv`` (``make perf-analyzer``); it is driven through
``benchmarks/servelib/perf_analyzer.py``, the same code the serving benchmark uses.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from servelib.perf_analyzer import PERF_ANALYZER, PerfAnalyzerError, run_perf_analyzer  # noqa: E402

pytestmark = pytest.mark.slow

# "(metrics :P)" before gRPC, "(grpc :P, metrics :P)" with it.
READY_LINE = re.compile(
    r"^hone serve: ready: (?P<models>.+) on http://(?P<host>[\d.]+):(?P<port>\d+) "
    r"\((?:grpc :(?P<grpc>\d+), )?metrics :(?P<metrics>\d+)\)$"
)
START_TIMEOUT_S = 60
MODEL = "relu"
WINDOW_MS = 1000  # three windows of one second per concurrency: ~4 s a run with start-up
RUN_TIMEOUT_S = 30


@dataclass
class Server:
    process: subprocess.Popen[str]
    http_port: int
    grpc_port: int | None

    def stats(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.http_port}/v2/models/{MODEL}/stats"
        with urllib.request.urlopen(url, timeout=5) as response:
            (model,) = json.loads(response.read())["model_stats"]
        return model


def relu_model(path: Path) -> Path:
    """y = Relu(x[batch, 512] @ W[512, 2048]), float32, W fixed by seed 0, opset 17."""
    weights = np.random.default_rng(0).standard_normal((512, 2048)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        MODEL,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 512])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2048])],
        [numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def start(model: Path, log: Path) -> Server:
    """``hone serve MODEL`` on free ports, once it printed its ready line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "hone.cli", "serve", str(model), "--http-port", "0", "--grpc-port", "0",
         "--metrics-port", "0"],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )  # fmt: skip
    watchdog = threading.Timer(START_TIMEOUT_S, process.kill)
    watchdog.start()
    try:
        line = process.stdout.readline().strip()  # type: ignore[union-attr]
    finally:
        watchdog.cancel()
    match = READY_LINE.match(line)
    if match is None:
        process.kill()
        process.wait(timeout=10)
        pytest.fail(f"hone serve did not print its ready line; stdout {line!r}, stderr {log.read_text()[-2000:]!r}")
    # Keep reading stdout so that nothing the server prints later can block it on a full pipe.
    threading.Thread(target=process.stdout.read, daemon=True).start()  # type: ignore[union-attr]
    return Server(process, int(match["port"]), int(match["grpc"]) if match["grpc"] else None)


@contextmanager
def serving(folder: Path) -> Iterator[Server]:
    """hone serve on the relu model made in ``folder``; SIGTERM (then kill) on the way out."""
    running = start(relu_model(folder / "relu.onnx"), folder / "serve.log")
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.process.send_signal(signal.SIGTERM)
        try:
            running.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait(timeout=10)


def measure(folder: Path, protocol: str) -> None:
    # A failure, not a skip: CI must not pass without having run perf_analyzer.
    if not PERF_ANALYZER.exists():
        pytest.fail(f"{PERF_ANALYZER} is missing: run `make perf-analyzer`")
    with serving(folder) as server:
        _measure(server, protocol)


def _measure(server: Server, protocol: str) -> None:
    port = server.http_port if protocol == "http" else server.grpc_port
    assert port is not None, "hone serve's ready line names no gRPC port"
    for concurrency in (1, 4):
        before = server.stats()
        try:
            result = run_perf_analyzer(
                MODEL, f"127.0.0.1:{port}", protocol, concurrency, window_ms=WINDOW_MS, timeout_s=RUN_TIMEOUT_S
            )
        except PerfAnalyzerError as error:
            pytest.fail(str(error))
        after = server.stats()
        where = f"{protocol} concurrency {concurrency}"
        assert result["throughput_infer_per_s"] > 0, where
        assert result["p99_ms"] is not None and result["p99_ms"] > 0, where
        assert result["requests"] is not None and result["requests"] > 0, (where, result["stdout"])
        failures = after["inference_stats"]["fail"]["count"] - before["inference_stats"]["fail"]["count"]
        assert failures == 0, f"{where}: hone counted {failures} failed requests"
        grown = after["inference_count"] - before["inference_count"]
        assert grown >= result["requests"], f"{where}: hone counted {grown}, perf_analyzer {result['requests']}"


def test_perf_analyzer_http(tmp_path: Path) -> None:
    measure(tmp_path, "http")


def test_perf_analyzer_grpc(tmp_path: Path) -> None:
    measure(tmp_path, "grpc")
