"""Abuse of a real ``hone serve`` process over sockets: clients that vanish mid-request, and
thousands of bad requests. The server keeps serving others and its memory stays bounded.

(Queue overflow, timeouts and requests after shutdown began are in test_http.py, in-process.)
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator

import numpy as np
import psutil
import pytest
from serve_models import TWO_INPUTS_TEXT, save_model
from test_clients import Server, start_server, stop_server

X = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)
GOOD_BODY = json.dumps(
    {
        "inputs": [
            {"name": "x", "shape": [2, 8], "datatype": "FP32", "data": X.ravel().tolist()},
            {"name": "ids", "shape": [2, 3], "datatype": "INT64", "data": [1, 2, 3, 4, 5, 6]},
        ]
    }
).encode()
# Growth allowed over the rejected requests: each is refused before its body could be kept (the
# declared bodies are over the limit, or malformed JSON of ~100 bytes), so a leak of even one
# small object per request (2,000 x ~2 KB) would show; allocator noise stays well below this.
RSS_GROWTH_BOUND_MB = 16


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("repository")
    save_model(TWO_INPUTS_TEXT, root / "pair" / "1" / "model.onnx")
    started = start_server(str(root), "--max-batch-size", "8", "--max-queue-delay-ms", "1")
    yield started
    code, _, stderr = stop_server(started)
    assert code == 0, stderr
    assert "Traceback" not in stderr and "ClientDisconnect" not in stderr, stderr[-2000:]


def post(connection: http.client.HTTPConnection, body: bytes, **headers: str) -> tuple[int, bytes]:
    connection.request("POST", "/v2/models/pair/infer", body=body, headers=headers)
    response = connection.getresponse()
    return response.status, response.read()


def assert_serves(server: Server) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        status, body = post(connection, GOOD_BODY, **{"Content-Type": "application/json"})
    finally:
        connection.close()
    assert status == 200, body
    np.testing.assert_allclose(json.loads(body)["outputs"][0]["data"], np.maximum(X, 0).ravel())


def raw_request(body: bytes, content_length: int) -> bytes:
    return (
        b"POST /v2/models/pair/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {content_length}\r\n\r\n".encode()
        + body
    )


@pytest.mark.slow
def test_clients_that_send_half_a_body_or_leave_before_the_answer_do_not_stop_the_server(
    server: Server,
) -> None:
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as half:
            half.sendall(raw_request(GOOD_BODY[: len(GOOD_BODY) // 2], len(GOOD_BODY)))
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as gone:
            gone.sendall(raw_request(GOOD_BODY, len(GOOD_BODY)))
            gone.shutdown(socket.SHUT_RDWR)
    assert_serves(server)
    assert server.process.poll() is None


@pytest.mark.slow
def test_thousands_of_rejected_requests_leave_memory_bounded_and_the_server_serving(server: Server) -> None:
    process = psutil.Process(server.process.pid)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)

    def abuse(count: int) -> None:
        for index in range(count):
            if index % 2:
                status, body = post(connection, b'{"inputs": [{"name": "x", "shape": [2, 8]' + b"x" * 64)
                assert status == 400, body
            else:
                # Declares a body over 64 MB: refused from Content-Length, before reading it.
                with socket.create_connection(("127.0.0.1", server.port), timeout=5) as big:
                    big.sendall(raw_request(b"{", 65 * 1024 * 1024))
                    assert b" 413 " in big.recv(4096).split(b"\r\n", 1)[0]

    abuse(200)  # warm the allocator and the import caches
    before_mb = process.memory_info().rss / 2**20
    abuse(2000)
    after_mb = process.memory_info().rss / 2**20
    connection.close()
    assert after_mb - before_mb < RSS_GROWTH_BOUND_MB, (before_mb, after_mb)
    assert_serves(server)
