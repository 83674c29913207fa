"""The v2 HTTP routes in-process (Starlette's TestClient over httpx2): every route, every error answer,
and that the server keeps serving after each.

The served repository holds ``pair`` (versions 1 and 2: y = Relu(x[N, 8]), z = ids[N, 3] as INT64)
and ``recorder``. Tests that stop or fill a server start their own.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_models import RECORDER_TEXT, TWO_INPUTS_TEXT, save_model

from hone.serve.config import BatchConfig, RepositoryEntry, load_repository, resolve_models
from hone.serve.http import create_app
from hone.serve.registry import ModelRegistry

MAX_BODY_BYTES = 64 * 1024
X = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)
IDS = np.array([[1, 2, 3], [-4, 5, 2**40]], dtype=np.int64)


def pair_inputs(x: np.ndarray = X, ids: np.ndarray = IDS) -> list[dict[str, Any]]:
    return [
        {"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.tolist()},
        {"name": "ids", "shape": list(ids.shape), "datatype": "INT64", "data": ids.ravel().tolist()},
    ]


@contextmanager
def running(
    resolve: Callable[[], Sequence[RepositoryEntry]], *, start: bool = True, model_control: str = "none",
    **app_options: Any,
) -> Iterator[tuple[TestClient, ModelRegistry]]:
    """A started registry behind the app, on the TestClient's event loop; drained on exit."""
    registry = ModelRegistry(resolve, model_control=model_control)
    with TestClient(create_app(registry, **app_options)) as client:
        if start:
            client.portal.call(registry.start)
        try:
            yield client, registry
        finally:
            client.portal.call(registry.stop)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repository")
    save_model(TWO_INPUTS_TEXT, root / "pair" / "1" / "model.onnx")
    save_model(TWO_INPUTS_TEXT, root / "pair" / "2" / "model.onnx")
    save_model(RECORDER_TEXT, root / "recorder" / "1" / "model.onnx")
    (root / "recorder" / "config.json").write_text(
        json.dumps({"max_batch_size": 4, "preferred_batch_sizes": [2, 4]})
    )
    return root


def repository_resolver(root: Path) -> Callable[[], list[RepositoryEntry]]:
    return lambda: load_repository(root, batch=BatchConfig(max_batch_size=8, max_queue_delay_ms=1.0))


@pytest.fixture(scope="module")
def client(repository: Path) -> Iterator[TestClient]:
    with running(repository_resolver(repository), max_body_bytes=MAX_BODY_BYTES) as (test_client, _):
        yield test_client


def assert_serves(client: TestClient) -> None:
    """The server still answers a good request correctly."""
    response = client.post("/v2/models/pair/infer", json={"inputs": pair_inputs()})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["outputs"][0]["data"], np.maximum(X, 0).ravel())


# -- metadata and health ---------------------------------------------------------------------------


def test_server_metadata_names_hone_and_its_extensions(client: TestClient) -> None:
    metadata = client.get("/v2").json()
    assert metadata["name"] == "hone"
    assert {"binary_tensor_data", "statistics", "model_repository", "model_configuration"} <= set(
        metadata["extensions"]
    )


def test_health_is_live_and_ready_once_every_model_is_warmed_up(client: TestClient) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200


def test_readiness_is_503_until_the_models_are_loaded(repository: Path) -> None:
    with running(repository_resolver(repository), start=False) as (test_client, registry):
        assert test_client.get("/v2/health/live").status_code == 200
        assert test_client.get("/v2/health/ready").status_code == 503
        test_client.portal.call(registry.start)
        assert test_client.get("/v2/health/ready").status_code == 200


def test_model_metadata_gives_versions_platform_and_tensors(client: TestClient) -> None:
    metadata = client.get("/v2/models/pair").json()
    assert metadata == {
        "name": "pair",
        "versions": ["1", "2"],
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
    assert client.get("/v2/models/pair/versions/1").json()["name"] == "pair"


def test_model_readiness_per_model_and_version(client: TestClient) -> None:
    assert client.get("/v2/models/pair/ready").status_code == 200
    assert client.get("/v2/models/pair/versions/1/ready").status_code == 200
    assert client.get("/v2/models/pair/versions/9/ready").status_code == 404
    assert client.get("/v2/models/nope/ready").status_code == 404


def test_model_config_is_tritons_with_dims_without_the_batch_dim(client: TestClient) -> None:
    config = client.get("/v2/models/recorder/config").json()
    assert config["name"] == "recorder" and config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 4
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [8]}]
    assert config["output"] == [
        {"name": "y", "data_type": "TYPE_FP32", "dims": [4]},
        {"name": "rows", "data_type": "TYPE_FP32", "dims": [1]},
    ]
    assert config["dynamic_batching"]["preferred_batch_size"] == [2, 4]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 1000
    assert config["instance_group"][0]["count"] == 1
    assert client.get("/v2/models/pair/versions/1/config").json()["input"][1] == {
        "name": "ids",
        "data_type": "TYPE_INT64",
        "dims": [3],
    }


# -- inference -------------------------------------------------------------------------------------


def test_json_inference_answers_every_output_and_echoes_the_id(client: TestClient) -> None:
    response = client.post("/v2/models/pair/infer", json={"id": "req-7", "inputs": pair_inputs()})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    answer = response.json()
    assert answer["id"] == "req-7" and answer["model_name"] == "pair" and answer["model_version"] == "2"
    y, z = answer["outputs"]
    assert (y["name"], y["datatype"], y["shape"]) == ("y", "FP32", [2, 8])
    np.testing.assert_allclose(y["data"], np.maximum(X, 0).ravel())
    assert (z["datatype"], z["shape"], z["data"]) == ("INT64", [2, 3], IDS.ravel().tolist())


def test_a_version_route_runs_that_version(client: TestClient) -> None:
    response = client.post("/v2/models/pair/versions/1/infer", json={"inputs": pair_inputs()})
    assert response.json()["model_version"] == "1"


def test_binary_inference_round_trips_raw_tensors(client: TestClient) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2, 8],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": X.nbytes},
                },
                {
                    "name": "ids",
                    "shape": [2, 3],
                    "datatype": "INT64",
                    "parameters": {"binary_data_size": IDS.nbytes},
                },
            ],
            "outputs": [
                {"name": "z", "parameters": {"binary_data": True}},
                {"name": "y", "parameters": {"binary_data": False}},
            ],
        }
    ).encode()
    response = client.post(
        "/v2/models/pair/infer",
        content=header + X.tobytes() + IDS.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    answer = json.loads(response.content[:length])
    z, y = answer["outputs"]
    assert z["parameters"]["binary_data_size"] == IDS.nbytes
    np.testing.assert_array_equal(np.frombuffer(response.content[length:], dtype="<i8").reshape(2, 3), IDS)
    np.testing.assert_allclose(y["data"], np.maximum(X, 0).ravel())


def test_gzip_request_bodies_are_accepted(client: TestClient) -> None:
    data = gzip.compress(json.dumps({"inputs": pair_inputs()}).encode())
    response = client.post("/v2/models/pair/infer", content=data, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text


def test_priority_parameters_within_the_levels_are_accepted(client: TestClient) -> None:
    for priority in (0, 1, 2):
        response = client.post(
            "/v2/models/pair/infer",
            json={"inputs": pair_inputs(), "parameters": {"priority": priority, "timeout": 10_000_000}},
        )
        assert response.status_code == 200, response.text


# -- statistics and metrics ------------------------------------------------------------------------


def test_statistics_count_requests_samples_and_batches(client: TestClient) -> None:
    before = client.get("/v2/models/pair/versions/1/stats").json()["model_stats"][0]
    for _ in range(3):
        client.post("/v2/models/pair/versions/1/infer", json={"inputs": pair_inputs()})
    client.post("/v2/models/pair/versions/1/infer", json={"inputs": pair_inputs(x=X[:, :7])})  # wrong shape
    after = client.get("/v2/models/pair/versions/1/stats").json()["model_stats"][0]
    stats, previous = after["inference_stats"], before["inference_stats"]
    assert stats["success"]["count"] == previous["success"]["count"] + 3
    assert stats["fail"]["count"] == previous["fail"]["count"] + 1
    assert after["inference_count"] == before["inference_count"] + 6
    assert after["execution_count"] == before["execution_count"] + 3
    assert stats["compute_infer"]["ns"] > previous["compute_infer"]["ns"]
    sizes = {entry["batch_size"]: entry["compute_infer"]["count"] for entry in after["batch_stats"]}
    assert sizes[2] >= 3
    everything = client.get("/v2/models/stats").json()["model_stats"]
    assert {(entry["name"], entry["version"]) for entry in everything} == {
        ("pair", "1"),
        ("pair", "2"),
        ("recorder", "1"),
    }
    assert [entry["version"] for entry in client.get("/v2/models/pair/stats").json()["model_stats"]] == [
        "1",
        "2",
    ]


def test_prometheus_metrics_use_tritons_names_and_labels(repository: Path) -> None:
    with running(repository_resolver(repository)) as (test_client, registry):
        for _ in range(2):
            test_client.post("/v2/models/pair/infer", json={"inputs": pair_inputs()})
        text = registry.metrics.render().decode()
    assert 'nv_inference_request_success{model="pair",version="2"} 2.0' in text
    assert 'nv_inference_count{model="pair",version="2"} 4.0' in text
    assert 'nv_inference_exec_count{model="pair",version="2"} 2.0' in text
    for name in (
        "nv_inference_request_failure",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "hone_inflight_requests",
        "hone_queue_depth",
    ):
        assert f'{name}{{model="pair",version="2"}}' in text
    assert 'hone_batch_size_count{model="pair",version="2"} 2.0' in text
    assert 'hone_request_latency_seconds_count{model="pair",version="2"} 2.0' in text


# -- errors: each answered alone, the server keeps serving -----------------------------------------


def _binary(header: dict[str, Any], payload: bytes, header_length: int | None = None) -> dict[str, Any]:
    data = json.dumps(header).encode()
    length = len(data) if header_length is None else header_length
    return {"content": data + payload, "headers": {"Inference-Header-Content-Length": str(length)}}


def _oversized_stream() -> Iterator[bytes]:
    for _ in range(20):
        yield b" " * 8192


ERRORS: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("malformed JSON", "/v2/models/pair/infer", {"content": b'{"inputs": [}'}, 400, "not valid JSON"),
    (
        "wrong datatype",
        "/v2/models/pair/infer",
        {"json": {"inputs": [{**pair_inputs()[0], "datatype": "FP64"}, pair_inputs()[1]]}},
        400,
        "must be FP32, got FP64",
    ),
    (
        "wrong shape",
        "/v2/models/pair/infer",
        {"json": {"inputs": pair_inputs(x=X[:, :7])}},
        400,
        "must have shape [-1, 8]",
    ),
    (
        "size mismatch",
        "/v2/models/pair/infer",
        {"json": {"inputs": [{**pair_inputs()[0], "shape": [3, 8]}, pair_inputs()[1]]}},
        400,
        "needs 24 values, but 'data' holds 16",
    ),
    (
        "missing input",
        "/v2/models/pair/infer",
        {"json": {"inputs": pair_inputs()[:1]}},
        400,
        "needs input(s) 'ids'",
    ),
    (
        "binary size that lies",
        "/v2/models/pair/infer",
        _binary(
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [2, 8],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": 640},
                    }
                ]
            },
            X.tobytes(),
        ),
        400,
        "only 64 bytes of binary data remain",
    ),
    (
        "header length that lies",
        "/v2/models/pair/infer",
        _binary({"inputs": pair_inputs()}, b"", header_length=10**6),
        400,
        "whole body is",
    ),
    (
        "header length not a number",
        "/v2/models/pair/infer",
        {"json": {"inputs": pair_inputs()}, "headers": {"Inference-Header-Content-Length": "lots"}},
        400,
        "non-negative integer",
    ),
    (
        "unknown output",
        "/v2/models/pair/infer",
        {"json": {"inputs": pair_inputs(), "outputs": [{"name": "w"}]}},
        400,
        "has no output(s) 'w'",
    ),
    (
        "priority past the levels",
        "/v2/models/pair/infer",
        {"json": {"inputs": pair_inputs(), "parameters": {"priority": 3}}},
        400,
        "from 1 (highest) to 2",
    ),
    (
        "unknown encoding",
        "/v2/models/pair/infer",
        {"content": b"{}", "headers": {"Content-Encoding": "br"}},
        400,
        "not supported",
    ),
    (
        "oversized body",
        "/v2/models/pair/infer",
        {"content": b" " * (MAX_BODY_BYTES + 1)},
        413,
        "above the server's limit",
    ),
    (
        "oversized chunked body",
        "/v2/models/pair/infer",
        {"content": _oversized_stream()},
        413,
        "above the server's limit",
    ),
    (
        "unknown model",
        "/v2/models/nope/infer",
        {"json": {"inputs": pair_inputs()}},
        404,
        "no model named 'nope'",
    ),
    (
        "unknown version",
        "/v2/models/pair/versions/7/infer",
        {"json": {"inputs": pair_inputs()}},
        404,
        "has no version '7'",
    ),
    ("unknown route", "/v2/nowhere", {}, 404, "no route POST /v2/nowhere"),
    ("wrong method", "/v2/health/live", {}, 405, "Method Not Allowed"),
]


@pytest.mark.parametrize(
    ("path", "request_options", "status", "message"),
    [case[1:] for case in ERRORS],
    ids=[case[0] for case in ERRORS],
)
def test_bad_requests_get_their_status_and_a_clear_error_and_others_are_still_served(
    client: TestClient, path: str, request_options: dict[str, Any], status: int, message: str
) -> None:
    response = client.post(path, **request_options)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert_serves(client)


def test_unknown_models_and_versions_in_metadata_routes_are_404(client: TestClient) -> None:
    for path in (
        "/v2/models/nope",
        "/v2/models/pair/versions/3",
        "/v2/models/nope/config",
        "/v2/models/nope/stats",
    ):
        response = client.get(path)
        assert response.status_code == 404 and "error" in response.json()


# -- load, queue and shutdown ----------------------------------------------------------------------


@pytest.fixture
def slow_model(tmp_path: Path) -> Callable[[], list[RepositoryEntry]]:
    """``recorder`` whose batches (even the first) wait 10 s to fill and whose queue holds one request."""
    path = save_model(RECORDER_TEXT, tmp_path / "slow.onnx")
    batch = BatchConfig(max_batch_size=8, max_queue_delay_ms=10_000, max_queue_size=1, idle_dispatch=False)
    return lambda: resolve_models(path, batch=batch)


def _recorder_request(rows: int = 1) -> dict[str, Any]:
    x = np.ones((rows, 8), dtype=np.float32)
    return {"inputs": [{"name": "x", "shape": [rows, 8], "datatype": "FP32", "data": x.ravel().tolist()}]}


def _post_in_background(
    client: TestClient, path: str, document: dict[str, Any]
) -> tuple[threading.Thread, list[httpx2.Response]]:
    answers: list[httpx2.Response] = []
    thread = threading.Thread(target=lambda: answers.append(client.post(path, json=document)))
    thread.start()
    return thread, answers


def _wait_for_queue_depth(client: TestClient, registry: ModelRegistry, depth: int) -> None:
    deadline = time.monotonic() + 10
    while client.portal.call(lambda: registry.get("slow").batcher.stats.queue_depth) < depth:
        assert time.monotonic() < deadline, "requests never reached the queue"
        time.sleep(0.01)


def test_a_full_queue_answers_503_at_once_and_the_queued_request_is_still_answered(
    slow_model: Callable[[], list[RepositoryEntry]],
) -> None:
    with running(slow_model) as (client, registry):
        thread, answers = _post_in_background(client, "/v2/models/slow/infer", _recorder_request())
        _wait_for_queue_depth(client, registry, 1)
        refused = client.post("/v2/models/slow/infer", json=_recorder_request())
        assert refused.status_code == 503 and "max_queue_size" in refused.json()["error"]
        client.portal.call(registry.stop)  # drains: the queued request runs now
        thread.join(10)
    assert answers[0].status_code == 200


def test_a_request_whose_timeout_expires_in_the_queue_gets_503(
    slow_model: Callable[[], list[RepositoryEntry]],
) -> None:
    with running(slow_model) as (client, _):
        response = client.post(
            "/v2/models/slow/infer", json={**_recorder_request(), "parameters": {"timeout": 20_000}}
        )
    assert response.status_code == 503 and "timeout" in response.json()["error"]


def test_after_shutdown_begins_new_requests_get_503_and_accepted_ones_are_answered(
    slow_model: Callable[[], list[RepositoryEntry]],
) -> None:
    with running(slow_model) as (client, registry):
        thread, answers = _post_in_background(client, "/v2/models/slow/infer", _recorder_request(rows=3))
        _wait_for_queue_depth(client, registry, 1)
        registry.begin_shutdown()
        late = client.post("/v2/models/slow/infer", json=_recorder_request())
        assert late.status_code == 503 and "shutting down" in late.json()["error"]
        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/v2/health/live").status_code == 200
        client.portal.call(registry.stop)
        thread.join(10)
    assert answers[0].status_code == 200
    assert answers[0].json()["outputs"][1]["data"] == [3.0, 3.0, 3.0]  # rows: it ran as a batch of 3


# -- repository ------------------------------------------------------------------------------------


def test_repository_load_and_unload_are_off_without_explicit_model_control(repository: Path) -> None:
    with running(repository_resolver(repository)) as (client, _):
        for action in ("load", "unload"):
            refused = client.post(f"/v2/repository/models/recorder/{action}")
            assert refused.status_code == 403 and "--model-control-mode explicit" in refused.json()["error"]
        assert client.get("/v2/models/recorder/ready").status_code == 200
        assert client.post("/v2/models/recorder/infer", json=_recorder_request()).status_code == 200


def test_repository_index_unload_and_load(repository: Path) -> None:
    with running(repository_resolver(repository), model_control="explicit") as (client, _):
        index = client.post("/v2/repository/index").json()
        assert {"name": "pair", "version": "2", "state": "READY", "reason": ""} in index
        assert client.post("/v2/repository/models/recorder/unload").status_code == 200
        assert client.get("/v2/models/recorder/ready").status_code == 503
        unloaded = client.post("/v2/models/recorder/infer", json=_recorder_request())
        assert unloaded.status_code == 503 and "unloaded" in unloaded.json()["error"]
        assert client.get("/v2/health/ready").status_code == 200  # unloaded on purpose
        assert {
            "name": "recorder",
            "version": "1",
            "state": "UNAVAILABLE",
            "reason": "unloaded",
        } in client.post("/v2/repository/index").json()
        assert [e["name"] for e in client.post("/v2/repository/index", json={"ready": True}).json()] == [
            "pair",
            "pair",
        ]
        assert_serves(client)
        assert client.post("/v2/repository/models/recorder/load").status_code == 200
        assert client.post("/v2/models/recorder/infer", json=_recorder_request()).status_code == 200
        assert client.post("/v2/repository/models/ghost/load").status_code == 404
        refused = client.post("/v2/repository/models/pair/load", json={"parameters": {"config": "{}"}})
        assert refused.status_code == 400 and "not supported" in refused.json()["error"]


# -- bearer token ----------------------------------------------------------------------------------


def test_a_token_guards_everything_but_health(repository: Path) -> None:
    with running(repository_resolver(repository), token="s3cret") as (client, _):
        assert client.get("/v2/health/ready").status_code == 200
        refused = client.get("/v2")
        assert refused.status_code == 401 and "bearer token" in refused.json()["error"]
        assert client.get("/v2", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/v2", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        response = client.post(
            "/v2/models/pair/infer",
            json={"inputs": pair_inputs()},
            headers={"Authorization": "Bearer s3cret"},
        )
        assert response.status_code == 200


def test_a_json_part_over_max_json_bytes_is_413_and_the_same_tensors_in_binary_pass(repository: Path) -> None:
    x = np.linspace(-1, 1, 8 * 8, dtype=np.float32).reshape(8, 8)
    ids = np.arange(8 * 3, dtype=np.int64).reshape(8, 3)
    with running(repository_resolver(repository), max_json_bytes=512) as (client, _):
        refused = client.post("/v2/models/pair/infer", json={"inputs": pair_inputs(x, ids)})
        assert refused.status_code == 413 and "--max-json-bytes" in refused.json()["error"]
        header = json.dumps({"inputs": [
            {"name": "x", "shape": [8, 8], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}},
            {"name": "ids", "shape": [8, 3], "datatype": "INT64", "parameters": {"binary_data_size": ids.nbytes}},
        ], "outputs": [{"name": "y"}]}).encode()
        answer = client.post("/v2/models/pair/infer", content=header + x.tobytes() + ids.tobytes(),
                             headers={"Inference-Header-Content-Length": str(len(header))})
        assert answer.status_code == 200, answer.text
        np.testing.assert_array_equal(answer.json()["outputs"][0]["data"], np.maximum(x, 0).ravel())


def test_a_gzip_json_body_is_refused_with_413_once_it_inflates_past_the_json_limit(repository: Path) -> None:
    bomb = gzip.compress(b'{"inputs": [' + b" " * (4 << 20) + b"]}")  # 4 MiB of JSON in a few KB
    with running(repository_resolver(repository), max_json_bytes=1 << 20) as (client, _):
        answer = client.post("/v2/models/pair/infer", content=bomb, headers={"Content-Encoding": "gzip"})
        assert answer.status_code == 413 and f"limit of {1 << 20} bytes" in answer.json()["error"], answer.text


def test_a_repository_request_body_is_read_only_up_to_64_kb(repository: Path) -> None:
    with running(repository_resolver(repository)) as (client, _):
        answer = client.post("/v2/repository/index", content=b" " * (65 * 1024))
        assert answer.status_code == 413
        assert client.post("/v2/repository/index", content=b"[" * 50_000).status_code == 400  # too deep: not a 500
