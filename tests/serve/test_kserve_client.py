"""``hone serve`` as a process, driven by KServe's own Python clients (the ``kserve`` package's
``InferenceRESTClient`` and ``InferenceGRPCClient``), not by our code: the README's "KServe's clients
work unchanged".

``import kserve`` brings its model server and Kubernetes SDK along, so kserve lives in
``.cache/kserve-venv`` (made by ``make kserve`` from ``tests/serve/kserve-requirements.txt``). The
probe, ``tests/serve/kserve_probe.py``, runs there once against one server and prints what every call
returned or raised; the tests below read that report and check the tensors against numpy here.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serve_models import TWO_INPUTS_TEXT, save_model
from test_clients import Server, start_server, stop_server

KSERVE_PYTHON = Path(__file__).resolve().parents[2] / ".cache" / "kserve-venv" / "bin" / "python"
PROBE = Path(__file__).resolve().with_name("kserve_probe.py")
PROBE_TIMEOUT_S = 120  # the probe bounds itself at 90 s, each call at 10 s
pytestmark = pytest.mark.slow


def _kserve_python() -> Path:
    if not KSERVE_PYTHON.exists():
        pytest.fail(f"{KSERVE_PYTHON} is missing: run `make kserve` (kserve's clients in their own environment)")
    return KSERVE_PYTHON


@pytest.fixture(scope="module")
def inputs() -> tuple[np.ndarray, np.ndarray]:
    """FP32 ``x`` [3, 8] (negatives, so Relu matters) and INT64 ``ids`` [3, 3] out to both int64 ends."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 8)).astype(np.float32)
    ids = rng.integers(-(2**62), 2**62, size=(3, 3), dtype=np.int64)
    ids[0] = [np.iinfo(np.int64).min, np.iinfo(np.int64).max, 2**53 + 1]
    return x, ids


@pytest.fixture(scope="module")
def pair_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("repository")
    save_model(TWO_INPUTS_TEXT, root / "pair" / "1" / "model.onnx")
    server = start_server(str(root), "--max-batch-size", "8", "--max-queue-delay-ms", "1")
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def probe(pair_server: Server, inputs: tuple[np.ndarray, np.ndarray]) -> Callable[[], dict[str, Any]]:
    """The probe's report, run once on first use; called in the test so a missing venv FAILS it."""
    cache: dict[str, dict[str, Any]] = {}

    def report() -> dict[str, Any]:
        if "report" not in cache:
            cache["report"] = _run_probe(pair_server, inputs)
        return cache["report"]

    return report


def _run_probe(server: Server, inputs: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    x, ids = inputs
    completed = subprocess.run(
        [
            str(_kserve_python()),
            str(PROBE),
            f"http://{server.url}",
            server.grpc_url,
            "pair",
            json.dumps({"x": x.tolist(), "ids": ids.tolist()}),
        ],
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT_S,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def _check_outputs(result: dict[str, Any], inputs: tuple[np.ndarray, np.ndarray], names: tuple[str, ...]) -> None:
    x, ids = inputs
    expected = {"y": ("FP32", np.maximum(x, np.float32(0))), "z": ("INT64", ids)}
    assert set(result["outputs"]) == set(names)
    for name in names:
        datatype, want = expected[name]
        output = result["outputs"][name]
        assert output["datatype"] == datatype and output["shape"] == list(want.shape), name
        assert output["dtype"] == str(want.dtype) and output["equal"] is True, name  # the probe's own check
        assert np.array_equal(np.asarray(output["data"], dtype=want.dtype), want), name


def _ok(call: dict[str, Any]) -> Any:
    assert call["ok"] is True, call
    return call["value"]


METADATA = {
    "name": "pair",
    "versions": ["1"],
    "platform": "onnxruntime_onnx",
    "inputs": [
        {"name": "x", "datatype": "FP32", "shape": [-1, 8]},
        {"name": "ids", "datatype": "INT64", "shape": [-1, 3]},
    ],
    "outputs": [
        {"name": "y", "datatype": "FP32", "shape": [-1, 8]},
        {"name": "z", "datatype": "INT64", "shape": [-1, 3]},
    ],
}


def test_kserve_rest_client_checks_model_ready_reads_metadata_and_infers_json_and_binary(
    probe: Callable[[], dict[str, Any]], inputs: tuple[np.ndarray, np.ndarray]
) -> None:
    report = probe()
    assert report["kserve"] == "0.21.0"
    rest = report["rest"]
    assert _ok(rest["model_ready"]) is True and _ok(rest["unknown_model_ready"]) is False
    server = _ok(rest["server_metadata"])
    assert server["name"] == "hone" and "binary_tensor_data" in server["extensions"]
    assert _ok(rest["model_metadata"]) == METADATA
    for key, request_id, binary_body, names in (
        ("infer_json", "rest-json", False, ("y", "z")),  # JSON tensors both ways
        ("infer_binary", "rest-binary", True, ("y", "z")),  # binary in, binary_data_output
        ("infer_only_z_binary", "rest-z", True, ("z",)),  # JSON in, one output asked for, as binary
    ):
        result = _ok(rest[key])
        assert result["id"] == request_id and result["model_name"] == "pair", key
        assert result["binary_body"] is binary_body, key
        _check_outputs(result, inputs, names)
    unknown = rest["infer_unknown_model"]
    assert unknown["ok"] is False and unknown["status"] == 404
    assert "no model named 'nope'" in unknown["error"]


def test_kserve_grpc_client_checks_health_reads_metadata_and_infers_contents_and_raw(
    probe: Callable[[], dict[str, Any]], inputs: tuple[np.ndarray, np.ndarray]
) -> None:
    rpc = probe()["grpc"]
    assert _ok(rpc["server_live"]) is True and _ok(rpc["server_ready"]) is True
    assert _ok(rpc["model_ready"]) is True and _ok(rpc["unknown_model_ready"]) is False
    server = _ok(rpc["server_metadata"])
    assert server["name"] == "hone" and "statistics" in server["extensions"]
    # protobuf's JSON mapping writes int64 as strings.
    metadata = json.loads(json.dumps(METADATA))
    for tensor in metadata["inputs"] + metadata["outputs"]:
        tensor["shape"] = [str(d) for d in tensor["shape"]]
    assert _ok(rpc["model_metadata"]) == metadata
    for key, request_id, names in (
        ("infer_contents", "grpc-contents", ("y", "z")),  # InferTensorContents
        ("infer_raw_version_1", "grpc-raw", ("y", "z")),  # raw_input_contents, model_version "1"
        ("infer_only_z", "grpc-z", ("z",)),
    ):
        result = _ok(rpc[key])
        assert result["id"] == request_id and result["model_name"] == "pair", key
        assert result["model_version"] == "1", key
        _check_outputs(result, inputs, names)
    assert rpc["infer_unknown_model"] == {
        "ok": False,
        "error": "StatusCode.NOT_FOUND: no model named 'nope' is served; served models: pair",
    }


def test_kserve_rest_client_server_live_and_ready(probe: Callable[[], dict[str, Any]]) -> None:
    # kserve 0.21.0's InferenceRESTClient.is_server_live/is_server_ready return
    # response.json()["live"/"ready"]: hone's health routes answer 200 with {"live": true} /
    # {"ready": true} (the Open Inference Protocol's bodies; tritonclient reads only the status).
    rest = probe()["rest"]
    assert rest["server_live"] == {"ok": True, "value": True}, rest["server_live"]
    assert rest["server_ready"] == {"ok": True, "value": True}, rest["server_ready"]
    for key, route in (("live", "/v2/health/live"), ("ready", "/v2/health/ready")):
        answer = rest[f"GET {route}"]
        assert answer["status"] == 200 and json.loads(answer["body"]) == {key: True}, answer
