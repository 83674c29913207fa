"""``hone serve --ray``: the v2 routes over two Ray Serve replicas, end to end, in .cache/ray-venv.

Ray is not in hone's environment (see scripts/ray-requirements.txt), so the test runs
tests/serve/ray_probe.py with .cache/ray-venv's Python (made by ``make ray``) and asserts on the
JSON it prints. Ray binds every interface and the host's address whatever it is told, so the probe
(server and client both) runs in a network namespace that has only loopback (``unshare --net``,
root), and in its own PID namespace so that no Ray process outlives it. The module's pure parts
(options, config document, batching helpers) are tested here too, in hone's own environment.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from starlette.requests import Request

from hone.errors import InferenceExecutionError, InferenceInputError, OptionError, RequestTooLargeError
from hone.serve import batch_rows, http, ray_serve

ROOT = Path(__file__).resolve().parents[2]
RAY_PYTHON = ROOT / ".cache" / "ray-venv" / "bin" / "python"
PROBE = Path(__file__).with_name("ray_probe.py")
PROBE_TIMEOUT_S = 85
# Only loopback (--net); its own PID namespace (--pid --fork --mount-proc) so that, with --kill-child,
# every Ray process dies with the probe, even one the timeout kills.
NAMESPACE = ("unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc")
pytestmark = pytest.mark.slow


def save_relu_matmul(folder: Path, rows: int = 8, cols: int = 4) -> tuple[Path, Path]:
    """y = Relu(MatMul(x[batch, rows], W[rows, cols])), float32, dynamic batch, opset 17."""
    weights = np.random.default_rng(7).standard_normal((rows, cols)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "relu_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", cols])],
        [numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    model_path, weights_path = folder / "tiny.onnx", folder / "W.npy"
    onnx.save(model, model_path)
    np.save(weights_path, weights)
    return model_path, weights_path


def run_probe(tmp_path: Path) -> dict[str, Any]:
    if not RAY_PYTHON.exists():
        pytest.fail(f"{RAY_PYTHON} is missing: run `make ray` (builds .cache/ray-venv with Ray Serve)")
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: install util-linux and iproute2 (the probe runs in a "
            "network namespace)"
        )
    model, weights = save_relu_matmul(tmp_path)
    script = f'ip link set lo up && exec "{RAY_PYTHON}" "{PROBE}" --model "{model}" --weights "{weights}"'
    finished = subprocess.run(
        [*NAMESPACE, "sh", "-c", script],
        capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, cwd=tmp_path,
    )
    output = f"{finished.stdout[-3000:]}\n{finished.stderr[-6000:]}"
    assert finished.returncode == 0, f"the probe failed:\n{output}"
    return json.loads(finished.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_probe(tmp_path_factory.mktemp("ray"))


def test_the_probe_runs_with_loopback_only(probe: dict[str, Any]) -> None:
    assert probe["interfaces"] == ["lo"]


def test_the_server_prints_its_ready_line_and_answers_health(probe: dict[str, Any]) -> None:
    assert probe["ready_line"] == "hone serve (ray): ready: tiny on http://127.0.0.1:8391 (2 replicas)"
    assert probe["/v2/health/live"] == probe["/v2/health/ready"] == probe["/v2/models/tiny/ready"] == 200


def test_concurrent_json_requests_are_answered_correctly_by_both_replicas(probe: dict[str, Any]) -> None:
    assert probe["json_statuses"] == [200]
    assert probe["json_correct"] == probe["json_requests"] == 48
    assert probe["replicas_seen"] == 2
    assert sum(probe["requests_per_replica"]) == 48
    assert 1 <= probe["largest_batch_samples"] <= 8  # max_batch_size counts samples, not requests


def test_binary_tensors_go_both_ways(probe: dict[str, Any]) -> None:
    assert probe["binary"] == {"status": 200, "shape": [2, 4], "binary_data_size": 32, "correct": True}


def test_a_gzip_body_is_inflated_before_decoding(probe: dict[str, Any]) -> None:
    assert probe["gzip"] == {"status": 200, "correct": True}


def test_bad_requests_get_a_one_line_error_with_the_status_of_the_error(probe: dict[str, Any]) -> None:
    assert probe["bad_shape"]["status"] == 400
    assert "must have shape [-1, 8]" in probe["bad_shape"]["body"]["error"]
    assert probe["bad_json"]["status"] == 400
    assert "not valid JSON" in probe["bad_json"]["body"]["error"]
    assert probe["unknown_model"]["status"] == 404
    assert "this server serves tiny v1" in probe["unknown_model"]["body"]["error"]


def test_metadata_and_config_describe_the_model_and_the_replicas(probe: dict[str, Any]) -> None:
    assert probe["server"]["extensions"] == ["binary_tensor_data", "model_configuration"]
    assert probe["metadata"]["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 8]}]
    config = probe["config"]
    assert config["max_batch_size"] == 8
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [8]}]
    assert config["instance_group"][0]["count"] == 2
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 5000


def test_sigterm_stops_ray_serve_cleanly(probe: dict[str, Any]) -> None:
    assert probe["exit_code"] == 0


# -- the pure parts, in hone's environment (no Ray) -------------------------------------------------


def test_a_missing_ray_says_to_run_make_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    with pytest.raises(OptionError, match=r"run `make ray` and use \.cache/ray-venv/bin/hone"):
        ray_serve.import_ray_serve()


@pytest.mark.parametrize(("cores", "replicas", "threads"), [(2, 1, 2), (2, 2, 1), (2, 4, 1), (16, 3, 5)])
def test_each_replica_gets_its_share_of_the_cores(cores: int, replicas: int, threads: int) -> None:
    assert ray_serve.replica_threads(cores, replicas) == threads


@pytest.mark.parametrize(("field", "value", "message"), [
    ("replicas", 0, "--replicas must be an integer of at least 1"),
    ("http_port", 0, "Ray Serve cannot pick a free port"),
])
def test_options_are_checked_when_given(field: str, value: int, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        ray_serve.RayServeOptions("model.onnx", **{field: value})


@pytest.mark.parametrize(("flags", "message"), [
    ({"ray": False, "replicas": 2}, "--replicas needs --ray"),
    ({"ray": True, "replicas": 2, "instances": 2, "token": "t"}, "--instances, --token cannot .* drop them"),
    ({"ray": True, "replicas": 1, "slo_p99_ms": 20.0}, "--slo-p99-ms cannot be combined .* drop it"),
])
def test_flags_that_do_not_combine_with_ray_are_refused(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        ray_serve.refuse_unsupported(**flags)


def test_plain_flags_pass_with_and_without_ray() -> None:
    ray_serve.refuse_unsupported(ray=False, replicas=1, instances=2)
    ray_serve.refuse_unsupported(ray=True, replicas=3)


def test_the_entry_has_an_absolute_model_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_relu_matmul(tmp_path)
    monkeypatch.chdir(tmp_path)
    entry = ray_serve.RayServeOptions("tiny.onnx", max_batch_size=4).entry()
    assert (entry.name, entry.source, entry.batch.max_batch_size) == ("tiny", str(tmp_path / "tiny.onnx"), 4)


def test_requests_with_different_shapes_run_as_separate_chunks_in_order() -> None:
    pending = [
        ray_serve._Pending({"x": np.ones((2, 3), np.float32)}, 2),
        ray_serve._Pending({"x": np.ones((1, 5), np.float32)}, 1),
        ray_serve._Pending({"x": np.ones((1, 3), np.float32)}, 1),
    ]
    assert ray_serve._chunks(pending) == [[0, 2], [1]]
    assert ray_serve._samples_in(pending) == 4


def test_a_batch_output_without_a_row_per_sample_fails_the_batch() -> None:
    with pytest.raises(InferenceExecutionError, match="for a batch of 3 samples"):
        batch_rows.split_rows({"y": np.zeros((2, 4))}, [1, 2], "m")


def test_the_config_keeps_only_the_batching_knobs_ray_honours() -> None:
    config = {
        "instance_group": [{"count": 1}],
        "dynamic_batching": {
            "max_queue_delay_microseconds": 2000, "priority_levels": 2, "default_queue_policy": {},
        },
    }
    served = ray_serve.ray_model_config(config, replicas=3)
    assert served == {
        "instance_group": [{"count": 3}],
        "dynamic_batching": {"max_queue_delay_microseconds": 2000},
    }


def test_errors_map_to_their_http_status() -> None:
    # The replicas answer errors with hone serve's own error answer (create_replica_app).
    request = Request({"type": "http", "method": "POST", "path": "/v2/models/m/infer", "headers": []})
    assert http.error_response(request, InferenceInputError("bad")).status_code == 400
    assert http.error_response(request, OptionError("bad")).status_code == 400
    assert http.error_response(request, RequestTooLargeError("10 bytes, above 5")).status_code == 413


def test_the_ready_line_names_the_model_its_url_and_the_replicas() -> None:
    ready = ray_serve.RayReadyInfo("tiny", "http://127.0.0.1:8391", 2)
    assert ready.line() == "hone serve (ray): ready: tiny on http://127.0.0.1:8391 (2 replicas)"
    assert ray_serve.RayReadyInfo("tiny", "http://127.0.0.1:8391", 1).line().endswith("(1 replica)")


def test_a_taken_http_port_is_refused_before_ray_starts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OptionError, match=f"cannot listen on 127.0.0.1:{port} .* another --http-port"):
            ray_serve._check_port_free("127.0.0.1", port)
