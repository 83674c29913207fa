"""``hone serve`` as a process, driven by the real tritonclient (not our code) from its own environment,
and by a raw socket for a client that goes away mid-request.

tritonclient 2.51.0 pins numpy<2 and protobuf<7, so it lives in ``.cache/clients-venv`` (made by
``make clients`` from ``tests/serve/clients-requirements.txt``); each test runs a small client
script there and reads back the JSON it prints.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from serve_models import RECORDER_TEXT, TWO_INPUTS_TEXT, save_model

CLIENTS_PYTHON = Path(__file__).resolve().parents[2] / ".cache" / "clients-venv" / "bin" / "python"
READY_LINE = re.compile(
    r"^hone serve: ready: (?P<models>.+) on http://(?P<host>[\d.]+):(?P<port>\d+) "
    r"\(grpc :(?P<grpc>\d+), metrics :(?P<metrics>\d+)\)$"
)
START_TIMEOUT_S = 60
FREE_PORTS = ("--http-port", "0", "--grpc-port", "0", "--metrics-port", "0")
pytestmark = pytest.mark.slow


@dataclass
class Server:
    process: subprocess.Popen[str]
    line: str
    port: int
    grpc_port: int
    metrics_port: int

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()


def start_server(*args: str) -> Server:
    """``hone serve ARGS`` on free ports, once it printed its ready line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "hone.cli", "serve", *args, *FREE_PORTS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(START_TIMEOUT_S, process.kill)
    watchdog.start()
    try:
        line = process.stdout.readline().strip()  # type: ignore[union-attr]
    finally:
        watchdog.cancel()
    match = READY_LINE.match(line)
    if match is None:
        process.kill()
        _, stderr = process.communicate(timeout=10)
        pytest.fail(f"hone serve did not print its ready line; stdout {line!r}, stderr {stderr!r}")
    return Server(process, line, int(match["port"]), int(match["grpc"]), int(match["metrics"]))


def stop_server(server: Server) -> tuple[int, str, str]:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    stdout, stderr = server.process.communicate(timeout=30)
    return server.process.returncode, stdout, stderr


def run_client(script: str, *args: str, timeout_s: float = 60) -> dict[str, Any]:
    """Run a tritonclient script in the clients environment; it prints one JSON object."""
    completed = subprocess.run(
        [str(_clients_python()), "-c", script, *args], capture_output=True, text=True, timeout=timeout_s
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def _clients_python() -> Path:
    if not CLIENTS_PYTHON.exists():
        pytest.fail(f"{CLIENTS_PYTHON} is missing: run `make clients` (tritonclient in its own environment)")
    return CLIENTS_PYTHON


@pytest.fixture(scope="module")
def pair_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("repository")
    save_model(TWO_INPUTS_TEXT, root / "pair" / "1" / "model.onnx")
    server = start_server(str(root), "--max-batch-size", "8", "--max-queue-delay-ms", "1",
                          "--model-control-mode", "explicit")
    yield server
    stop_server(server)


METADATA_AND_INFER = """
import json, sys
import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

client = httpclient.InferenceServerClient(sys.argv[1])
x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)
ids = np.arange(6, dtype=np.int64).reshape(2, 3) - 2
report = {
    "live": client.is_server_live(),
    "ready": client.is_server_ready(),
    "model_ready": client.is_model_ready("pair"),
    "server": client.get_server_metadata(),
    "model": client.get_model_metadata("pair"),
    "config": client.get_model_config("pair"),
}

def inputs(binary):
    tensors = [httpclient.InferInput("x", list(x.shape), "FP32"), httpclient.InferInput("ids", list(ids.shape), "INT64")]
    tensors[0].set_data_from_numpy(x, binary_data=binary)
    tensors[1].set_data_from_numpy(ids, binary_data=binary)
    return tensors

def check(result):
    return {
        "y": bool(np.allclose(result.as_numpy("y"), np.maximum(x, 0))),
        "z": bool((result.as_numpy("z") == ids).all()),
        "id": result.get_response().get("id"),
    }

for binary in (False, True):
    outputs = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in ("y", "z")]
    report[f"binary={binary}"] = check(client.infer("pair", inputs(binary), outputs=outputs, request_id=f"r-{binary}"))
report["default outputs"] = check(client.infer("pair", inputs(True)))
try:
    client.infer("nope", inputs(False))
except InferenceServerException as exc:
    report["unknown model"] = exc.message()
report["stats"] = client.get_inference_statistics("pair")
report["index"] = client.get_model_repository_index()
client.unload_model("pair")
report["ready after unload"] = client.is_model_ready("pair")
client.load_model("pair")
report["ready after load"] = client.is_model_ready("pair")
print(json.dumps(report))
"""


def test_tritonclient_http_reads_metadata_config_and_stats_and_infers_json_and_binary(
    pair_server: Server,
) -> None:
    assert pair_server.line.startswith("hone serve: ready: pair v1 on http://127.0.0.1:")
    report = run_client(METADATA_AND_INFER, pair_server.url)
    assert report["live"] and report["ready"] and report["model_ready"]
    assert report["server"]["name"] == "hone" and "statistics" in report["server"]["extensions"]
    assert report["model"]["platform"] == "onnxruntime_onnx"
    assert report["model"]["inputs"][1] == {"name": "ids", "datatype": "INT64", "shape": [-1, 3]}
    assert report["config"]["max_batch_size"] == 8
    assert report["config"]["input"][0] == {"name": "x", "data_type": "TYPE_FP32", "dims": [8]}
    for key, request_id in (
        ("binary=False", "r-False"),
        ("binary=True", "r-True"),
        ("default outputs", None),
    ):
        assert report[key] == {"y": True, "z": True, "id": request_id}, key
    assert "no model named 'nope'" in report["unknown model"]
    stats = report["stats"]["model_stats"][0]
    assert stats["name"] == "pair" and stats["inference_stats"]["success"]["count"] == 3
    assert stats["inference_count"] == 6
    assert {"name": "pair", "version": "1", "state": "READY", "reason": ""} in report["index"]
    assert report["ready after unload"] is False and report["ready after load"] is True


GRPC_METADATA_AND_INFER = """
import json, sys
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

client = grpcclient.InferenceServerClient(sys.argv[1])
x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)
ids = np.arange(6, dtype=np.int64).reshape(2, 3) - 2
report = {
    "live": client.is_server_live(),
    "ready": client.is_server_ready(),
    "model_ready": client.is_model_ready("pair"),
    "unknown_ready": client.is_model_ready("nope"),
    "server": client.get_server_metadata(as_json=True),
    "model": client.get_model_metadata("pair", as_json=True),
    "config": client.get_model_config("pair", as_json=True),
}
tensors = [grpcclient.InferInput("x", list(x.shape), "FP32"), grpcclient.InferInput("ids", list(ids.shape), "INT64")]
tensors[0].set_data_from_numpy(x)
tensors[1].set_data_from_numpy(ids)
outputs = [grpcclient.InferRequestedOutput("z")]
result = client.infer("pair", tensors, outputs=outputs, request_id="g-1", priority=1, timeout=5_000_000)
report["only z"] = {
    "z": bool((result.as_numpy("z") == ids).all()),
    "y missing": result.as_numpy("y") is None,
    "id": result.get_response(as_json=True).get("id"),
}
result = client.infer("pair", tensors)
report["both"] = {"y": bool(np.allclose(result.as_numpy("y"), np.maximum(x, 0))), "z": bool((result.as_numpy("z") == ids).all())}
bad = grpcclient.InferInput("x", [2, 8], "FP64")
bad.set_data_from_numpy(x.astype(np.float64))
errors = {}
for label, call in (
    ("unknown model", lambda: client.infer("nope", tensors)),
    ("wrong datatype", lambda: client.infer("pair", [bad, tensors[1]])),
    ("unknown output", lambda: client.infer("pair", tensors, outputs=[grpcclient.InferRequestedOutput("w")])),
):
    try:
        call()
    except InferenceServerException as exc:
        errors[label] = {"status": exc.status(), "message": exc.message()}
report["errors"] = errors
report["stats"] = client.get_inference_statistics("pair", as_json=True)
report["index"] = client.get_model_repository_index(as_json=True)
client.unload_model("pair")
report["ready after unload"] = client.is_model_ready("pair")
client.load_model("pair")
report["ready after load"] = client.is_model_ready("pair")
print(json.dumps(report))
"""


def test_tritonclient_grpc_reads_metadata_config_and_stats_and_infers(pair_server: Server) -> None:
    report = run_client(GRPC_METADATA_AND_INFER, pair_server.grpc_url)
    assert report["live"] and report["ready"] and report["model_ready"]
    assert report["unknown_ready"] is False
    assert report["server"]["name"] == "hone" and "statistics" in report["server"]["extensions"]
    assert report["model"]["platform"] == "onnxruntime_onnx"
    assert report["model"]["inputs"][1] == {"name": "ids", "datatype": "INT64", "shape": ["-1", "3"]}
    config = report["config"]["config"]
    assert config["max_batch_size"] == 8
    assert config["input"][0] == {"name": "x", "data_type": "TYPE_FP32", "dims": ["8"]}
    assert config["dynamic_batching"]["preserve_ordering"] is True
    assert report["only z"] == {"z": True, "y missing": True, "id": "g-1"}
    assert report["both"] == {"y": True, "z": True}
    errors = report["errors"]
    assert errors["unknown model"]["status"] == "StatusCode.NOT_FOUND"
    assert "no model named 'nope'" in errors["unknown model"]["message"]
    assert errors["wrong datatype"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "FP64" in errors["wrong datatype"]["message"]
    assert errors["unknown output"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "no output(s) 'w'" in errors["unknown output"]["message"]
    stats = [s for s in report["stats"]["model_stats"] if s["name"] == "pair"][0]
    assert int(stats["inference_stats"]["success"]["count"]) >= 2
    assert {"name": "pair", "version": "1", "state": "READY"}.items() <= report["index"]["models"][0].items()
    assert report["ready after unload"] is False and report["ready after load"] is True


CONCURRENT_INFER = """
import json, sys
import numpy as np
import tritonclient.http as httpclient

count = int(sys.argv[2])
client = httpclient.InferenceServerClient(sys.argv[1], concurrency=count, network_timeout=60)
handles = []
for index in range(count):
    x = np.full((1, 8), float(index), dtype=np.float32)
    tensor = httpclient.InferInput("x", [1, 8], "FP32")
    tensor.set_data_from_numpy(x)
    handles.append(client.async_infer("recorder", [tensor]))
answers = []
for index, handle in enumerate(handles):
    try:
        result = handle.get_result()
        answers.append({"ok": True, "rows": float(result.as_numpy("rows")[0, 0])})
    except Exception as exc:
        answers.append({"ok": False, "error": str(exc)})
print(json.dumps({"answers": answers}))
"""


def test_sigterm_during_load_answers_every_accepted_request_then_exits_0(tmp_path: Path) -> None:
    requests = 12
    # Batches wait up to 60 s to fill 64 samples, even the first (idle_dispatch off): the requests
    # are all in the queue at SIGTERM.
    save_model(RECORDER_TEXT, tmp_path / "recorder" / "1" / "model.onnx")
    (tmp_path / "recorder" / "config.json").write_text(
        json.dumps({"max_batch_size": 64, "max_queue_delay_ms": 60000, "idle_dispatch": False})
    )
    server = start_server(str(tmp_path))
    try:
        client = subprocess.Popen(
            [str(_clients_python()), "-c", CONCURRENT_INFER, server.url, str(requests)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while f'hone_queue_depth{{model="recorder",version="1"}} {requests}.0' not in server.metrics():
            assert time.monotonic() < deadline and client.poll() is None, (
                "the requests never all reached the queue"
            )
            time.sleep(0.05)
        returncode, stdout, stderr = stop_server(server)
        client_out, client_err = client.communicate(timeout=30)
    finally:
        server.process.kill()
    assert returncode == 0, stderr
    assert stdout == ""  # the ready line was the only output
    answers = json.loads(client_out)["answers"]
    assert len(answers) == requests
    assert all(answer["ok"] for answer in answers), answers
    assert {answer["rows"] for answer in answers} == {float(requests)}  # drained as one batch


def _raw_infer(port: int, rows: int) -> socket.socket:
    """Send one inference request on a raw connection; the caller reads or drops the answer."""
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [rows, 8], "datatype": "FP32", "data": [0.5] * (8 * rows)}]}
    )
    head = f"POST /v2/models/recorder/infer HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection.sendall(head.encode() + body.encode())
    return connection


def _wait_for_metric(server: Server, sample: str) -> None:
    deadline = time.monotonic() + 30
    while sample not in server.metrics():
        assert time.monotonic() < deadline, f"never saw {sample!r} in the metrics"
        time.sleep(0.05)


def test_a_client_that_disconnects_has_its_request_withdrawn_and_others_are_served(tmp_path: Path) -> None:
    # idle_dispatch off: the lone request waits for company (Triton's rule) instead of running.
    save_model(RECORDER_TEXT, tmp_path / "recorder" / "1" / "model.onnx")
    (tmp_path / "recorder" / "config.json").write_text(
        json.dumps({"max_batch_size": 2, "max_queue_delay_ms": 60000, "idle_dispatch": False})
    )
    server = start_server(str(tmp_path))
    labels = '{model="recorder",version="1"}'
    try:
        waiting = _raw_infer(server.port, rows=1)  # waits for a second sample that never comes
        _wait_for_metric(server, f"hone_queue_depth{labels} 1.0")
        waiting.close()
        _wait_for_metric(server, f"hone_queue_depth{labels} 0.0")
        _wait_for_metric(server, f"nv_inference_request_failure{labels} 1.0")
        full = _raw_infer(server.port, rows=2)  # a full batch runs at once
        answer = full.recv(65536).decode()
        full.close()
        assert answer.startswith("HTTP/1.1 200"), answer
        assert f"nv_inference_exec_count{labels} 1.0" in server.metrics()  # the withdrawn one never ran
    finally:
        returncode, _, stderr = stop_server(server)
    assert returncode == 0, stderr


def test_startup_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    completed = subprocess.run(
        [sys.executable, "-m", "hone.cli", "serve", str(bad), *FREE_PORTS],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert len(completed.stderr.strip().splitlines()) == 1 and completed.stderr.startswith("error:")


def test_slo_mode_prints_its_choice_then_serves_with_it(tmp_path: Path) -> None:
    model = save_model(TWO_INPUTS_TEXT, tmp_path / "pair.onnx")
    process = subprocess.Popen(
        [sys.executable, "-m", "hone.cli", "serve", str(model), "--slo-p99-ms", "250", *FREE_PORTS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(START_TIMEOUT_S, process.kill)
    watchdog.start()
    try:
        plan_line = process.stdout.readline().strip()  # type: ignore[union-attr]
        ready = READY_LINE.match(process.stdout.readline().strip())  # type: ignore[union-attr]
    finally:
        watchdog.cancel()
    try:
        chosen = re.search(r"max_batch_size (\d+), max_queue_delay_ms ([\d.]+)", plan_line)
        assert plan_line.startswith("hone serve: slo: pair v1 p99 <= 250 ms"), plan_line
        assert chosen is not None and ready is not None, plan_line
        url = f"http://127.0.0.1:{ready['port']}/v2/models/pair/config"
        with urllib.request.urlopen(url, timeout=10) as response:
            config = json.load(response)
        max_batch = int(chosen[1])
        assert config["max_batch_size"] == (max_batch if max_batch > 1 else 0)
        if max_batch > 1:
            delay_us = config["dynamic_batching"]["max_queue_delay_microseconds"]
            assert delay_us == round(float(chosen[2]) * 1000)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


GRPC_TOKEN = """
import json, sys
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

client = grpcclient.InferenceServerClient(sys.argv[1])
x = np.ones((1, 8), dtype=np.float32)
ids = np.zeros((1, 3), dtype=np.int64)
tensors = [grpcclient.InferInput("x", [1, 8], "FP32"), grpcclient.InferInput("ids", [1, 3], "INT64")]
tensors[0].set_data_from_numpy(x)
tensors[1].set_data_from_numpy(ids)
report = {"ready without a token": client.is_server_ready()}
for label, headers in (("no token", None), ("wrong token", {"authorization": "Bearer nope"})):
    try:
        client.infer("pair", tensors, headers=headers)
        report[label] = "answered"
    except InferenceServerException as exc:
        report[label] = exc.status()
result = client.infer("pair", tensors, headers={"authorization": "Bearer s3cret"})
report["with the token"] = bool((result.as_numpy("z") == ids).all())
print(json.dumps(report))
"""


def test_a_token_guards_grpc_too_but_not_its_health(tmp_path: Path) -> None:
    save_model(TWO_INPUTS_TEXT, tmp_path / "pair" / "1" / "model.onnx")
    server = start_server(str(tmp_path), "--token", "s3cret")
    try:
        report = run_client(GRPC_TOKEN, server.grpc_url)
    finally:
        stop_server(server)
    assert report == {
        "ready without a token": True,
        "no token": "StatusCode.UNAUTHENTICATED",
        "wrong token": "StatusCode.UNAUTHENTICATED",
        "with the token": True,
    }
