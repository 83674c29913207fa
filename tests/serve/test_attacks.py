"""What one client can do to a real ``hone serve`` process, and what the others still get: a
poisoned request in a batch of good ones fails alone; model control is off unless asked and a
corrupt reload leaves the old version serving; huge heads, long URLs and heads that never end are
refused with their status while health and inference keep answering.

(Clients that vanish and floods of bad requests are in test_abuse.py.)
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import numpy as np
import psutil
import pytest
from serve_models import save_model
from test_clients import Server, start_server, stop_server

# y[n] = table[ids[n]]: each request's answer depends on its own ids only, and an id of 10 or more
# is onnxruntime's INVALID_ARGUMENT (Gather's indices out of range) for the whole batch it runs in.
TABLE = np.arange(40, dtype=np.float32).reshape(10, 4)
LOOKUP_TEXT = f"""
<ir_version: 8, opset_import: ["" : 17]>
lookup (int64[N] ids) => (float[N, 4] y) <float[10, 4] table = {{{", ".join(str(v) for v in TABLE.ravel())}}}> {{
    y = Gather <axis = 0> (table, ids)
}}
"""


# The same lookup with its ids computed (an Identity): the server cannot see the Gather's range
# from the graph input, so a poisoned request reaches onnxruntime and fails its batch, which is rerun.
COMPUTED_LOOKUP_TEXT = LOOKUP_TEXT.replace("lookup (", "computed (").replace(
    "y = Gather <axis = 0> (table, ids)", "j = Identity (ids)\n    y = Gather <axis = 0> (table, j)")


@pytest.fixture(scope="module")
def lookup_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("repository")
    save_model(LOOKUP_TEXT, root / "lookup" / "1" / "model.onnx")
    save_model(COMPUTED_LOOKUP_TEXT, root / "computed" / "1" / "model.onnx")
    # a long queue delay, so the four concurrent requests below share one batch
    started = start_server(str(root), "--max-batch-size", "8", "--max-queue-delay-ms", "200")
    yield started
    code, _, stderr = stop_server(started)
    assert code == 0, stderr
    assert "Traceback" not in stderr, stderr[-2000:]  # a client's bad data is a warning, not hone's bug


def _infer(server: Server, ids: list[int], model: str = "lookup") -> tuple[int, dict]:
    body = json.dumps({"inputs": [{"name": "ids", "shape": [len(ids)], "datatype": "INT64", "data": ids}]})
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("POST", f"/v2/models/{model}/infer", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize("model", ["lookup", "computed"])
def test_a_request_with_an_index_out_of_range_fails_alone_with_a_400(lookup_server: Server, model: str) -> None:
    """lookup: refused at admission (the Gather's range is known from the graph); computed: its
    batch fails in onnxruntime and is rerun one by one."""
    requests = {"good-a": [1, 2], "poison": [3, 1000], "good-b": [9], "good-c": [0, 0, 5]}
    answers: dict[str, tuple[int, dict]] = {}
    start = threading.Barrier(len(requests))

    def send(name: str, ids: list[int]) -> None:
        start.wait()
        answers[name] = _infer(lookup_server, ids, model)

    threads = [threading.Thread(target=send, args=item) for item in requests.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    status, body = answers["poison"]
    assert status == 400, body
    assert "Gather" in body["error"] and "\n" not in body["error"]
    if model == "lookup":
        assert "holds 1000, but Gather node" in body["error"] and "from -10 to 9" in body["error"], body
    for name in ("good-a", "good-b", "good-c"):
        status, body = answers[name]
        assert status == 200, (name, body)
        np.testing.assert_array_equal(np.array(body["outputs"][0]["data"]).reshape(-1, 4), TABLE[requests[name]])


def _post(server: Server, path: str, token: str | None = None) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        connection.request("POST", path, body=b"", headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_control_is_off_by_default_and_a_corrupt_reload_keeps_the_old_version_serving(tmp_path) -> None:
    root = tmp_path / "repository"
    model_file = save_model(LOOKUP_TEXT, root / "lookup" / "1" / "model.onnx")
    (root / "bad name!" / "1").mkdir(parents=True)  # a folder hone cannot serve: skipped, not fatal
    default = start_server(str(root))
    try:
        assert _infer(default, [1])[0] == 200
        for action in ("load", "unload"):
            status, body = _post(default, f"/v2/repository/models/lookup/{action}")
            assert status == 403 and "--model-control-mode explicit" in body
        assert _infer(default, [1])[0] == 200
    finally:
        code, _, stderr = stop_server(default)
    assert code == 0 and "skipping model folder 'bad name!'" in stderr, stderr[-2000:]

    explicit = start_server(str(root), "--model-control-mode", "explicit", "--token", "s3cret")
    try:
        assert _post(explicit, "/v2/repository/models/lookup/unload")[0] == 401  # the token guards control
        model_file.write_bytes(model_file.read_bytes()[:100])  # corrupt on disk, then reload
        status, body = _post(explicit, "/v2/repository/models/lookup/load", token="s3cret")
        assert status >= 400 and "lookup" in body
        connection = http.client.HTTPConnection("127.0.0.1", explicit.port, timeout=30)
        body = json.dumps({"inputs": [{"name": "ids", "shape": [1], "datatype": "INT64", "data": [2]}]})
        connection.request("POST", "/v2/models/lookup/infer", body=body,
                           headers={"Content-Type": "application/json", "Authorization": "Bearer s3cret"})
        response = connection.getresponse()
        answer = json.loads(response.read())
        connection.close()
        assert response.status == 200, answer  # the old version still serves
        np.testing.assert_array_equal(np.array(answer["outputs"][0]["data"]), TABLE[2])
        connection = http.client.HTTPConnection("127.0.0.1", explicit.port, timeout=10)
        connection.request("GET", "/v2/health/ready")
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        stop_server(explicit)


def _raw(server: Server, data: bytes, *, read_timeout_s: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=read_timeout_s) as connection:
        try:
            connection.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-send: the answer is still readable
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        return answer


def _health_ms(server: Server) -> float:
    began = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    connection.request("GET", "/v2/health/live")
    assert connection.getresponse().status == 200
    connection.close()
    return 1000 * (time.perf_counter() - began)


def test_a_huge_header_is_431_a_long_url_414_and_the_server_stays_small(lookup_server: Server) -> None:
    rss_before = psutil.Process(lookup_server.process.pid).memory_info().rss
    huge = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (20 * 1024 * 1024) + b"\r\n\r\n"
    assert _raw(lookup_server, huge).startswith(b"HTTP/1.1 431 ")
    long_url = b"GET /v2/health/live?" + b"q" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert _raw(lookup_server, long_url).startswith(b"HTTP/1.1 414 ")
    many = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 20_000 + b"\r\n"
    assert _raw(lookup_server, many).startswith(b"HTTP/1.1 431 ")
    growth_mb = (psutil.Process(lookup_server.process.pid).memory_info().rss - rss_before) / 2**20
    assert growth_mb < 64, growth_mb
    assert _health_ms(lookup_server) < 1000
    assert _infer(lookup_server, [4])[0] == 200


def test_a_head_that_never_ends_is_cut_at_the_deadline_while_others_are_served(tmp_path) -> None:
    root = tmp_path / "repository"
    save_model(LOOKUP_TEXT, root / "lookup" / "1" / "model.onnx")
    server = start_server(str(root), "--header-timeout-s", "1")
    slow = []
    try:
        for _ in range(50):  # slowloris: open connections that send half a head and stop
            connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            connection.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(connection)
        assert _health_ms(server) < 1000
        time.sleep(2.0)
        answers = [connection.recv(4096) for connection in slow]
        assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), answers[:2]
        assert _infer(server, [3])[0] == 200
    finally:
        for connection in slow:
            connection.close()
        stop_server(server)


LOG_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
logs (float[N, 2] x) => (float[N, 2] y) {
    y = Log (x)
}
"""


def test_an_output_json_cannot_carry_is_refused_with_the_way_to_get_it(tmp_path) -> None:
    root = tmp_path / "repository"
    save_model(LOG_TEXT, root / "logs" / "1" / "model.onnx")
    server = start_server(str(root))
    try:
        def ask(parameters: dict) -> tuple[int, bytes]:
            body = json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [0.0, 1.0]}],
                               "parameters": parameters})
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            connection.request("POST", "/v2/models/logs/infer", body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = response.status, response.read()
            connection.close()
            return answer

        status, body = ask({})
        assert status == 400 and "NaN or Infinity" in json.loads(body)["error"]  # valid JSON, one line
        status, body = ask({"binary_data_output": True})
        assert status == 200
        header_length = len(body) - 8
        values = np.frombuffer(body[header_length:], dtype="<f4")
        assert values[0] == -np.inf and values[1] == 0.0
    finally:
        stop_server(server)


def _partial_body(server: Server, declared: int, sent: int) -> socket.socket:
    """A connection that declares a ``declared``-byte infer body and sends ``sent`` bytes of it."""
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    connection.sendall(b"POST /v2/models/lookup/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: " + str(declared).encode() + b"\r\n\r\n" + b" " * sent)
    return connection


def test_bodies_beyond_the_byte_budget_are_503_and_unfinished_ones_408_at_their_deadline(tmp_path) -> None:
    root = tmp_path / "repository"
    save_model(LOOKUP_TEXT, root / "lookup" / "1" / "model.onnx")
    server = start_server(str(root), "--max-inflight-bytes", str(8 * 2**20), "--body-timeout-s", "3")
    holders: list[socket.socket] = []
    try:
        for _ in range(4):  # 4 x 3 MiB held of 6 MiB bodies: the third passes the 8 MiB budget
            holders.append(_partial_body(server, 6 * 2**20, 3 * 2**20))
            time.sleep(0.3)
        assert _health_ms(server) < 1000
        assert _infer(server, [1, 2])[0] == 200  # a small request still fits beside the two held bodies
        answers = []
        for connection in holders:
            connection.settimeout(10)
            answer = b""
            with contextlib.suppress(ConnectionResetError, TimeoutError):
                while chunk := connection.recv(65536):
                    answer += chunk
            answers.append(answer)
        busy = [a for a in answers if a.startswith(b"HTTP/1.1 503 ")]
        late = [a for a in answers if a.startswith(b"HTTP/1.1 408 ")]
        assert len(busy) == 2 and b"--max-inflight-bytes" in busy[0], answers
        assert len(late) == 2 and b"did not arrive within 3 s" in late[0], answers
        assert _infer(server, [3])[0] == 200  # everything was given back
    finally:
        for connection in holders:
            connection.close()
        code, _, stderr = stop_server(server)
    assert code == 0 and "Traceback" not in stderr, stderr[-2000:]


def _post_json(server: Server, text: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("POST", "/v2/models/lookup/infer", body=text.encode(),
                           headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


@pytest.mark.parametrize(("text", "message"), [
    ('{"inputs": [{"name": "ids", "shape": [0, 100000000000000000000], "datatype": "INT64", "data": []}]}',
     "dims must fit int64"),
    ('{"inputs": [{"name": "ids", "shape": [' + ", ".join(["1"] * 70) + '], "datatype": "INT64", "data": [1]}]}',
     "at most 64"),
    ('{"inputs": [{"name": "ids", "shape": [1], "datatype": "INT64", "data": ' + "[" * 100_000 + "1" + "]" * 100_000
     + "}]}", "nested too deeply"),
    ('{"inputs": [{"name": "ids", "shape": [1], "datatype": "INT64", "data": [' + "7" * 5000 + "]}]}",
     "Python cannot read"),
])
def test_client_shapes_and_json_that_used_to_give_500_are_400s(lookup_server: Server, text: str, message: str) -> None:
    status, body = _post_json(lookup_server, text)
    assert status == 400 and message in json.loads(body)["error"], body[:500]
    assert _infer(lookup_server, [2])[0] == 200  # (the fixture asserts no traceback was logged)


def test_the_metrics_port_needs_the_token_when_one_is_set(tmp_path) -> None:
    root = tmp_path / "repository"
    save_model(LOOKUP_TEXT, root / "lookup" / "1" / "model.onnx")
    server = start_server(str(root), "--token", "s3cret")
    try:
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 401
        request = urllib.request.Request(url, headers={"Authorization": "Bearer s3cret"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200 and b"nv_inference_request_success" in response.read()
    finally:
        stop_server(server)


def test_client_text_reaches_the_log_escaped_not_raw() -> None:
    script = ("from hone.cli import _configure; _configure(False); import logging; "
              "logging.getLogger('hone.serve.http').warning('POST %r -> 404: %s', '/v2/models/\\x1b[2J', 'x\\x1b[31my')")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stderr and "\\x1b[2J" in done.stderr and "x\\x1b[31my" in done.stderr


# y[n, i] = x[n] * sin(i): 3 million floats whose JSON takes seconds to write (long decimals)
WIDE_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
wide (float[N, 1] x) => (float[N, 3000000] y) <float start = {0.0}, float limit = {3000000.0}, float delta = {1.0}> {
    r = Range (start, limit, delta)
    s = Sin (r)
    y = Mul (x, s)
}
"""


def test_health_answers_while_a_large_json_answer_is_encoded(tmp_path) -> None:
    root = tmp_path / "repository"
    save_model(WIDE_TEXT, root / "wide" / "1" / "model.onnx")
    server = start_server(str(root))
    try:
        answer: dict[str, object] = {}

        def ask() -> None:
            body = json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [0.5]}]})
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
            connection.request("POST", "/v2/models/wide/infer", body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            answer["status"], answer["body"] = response.status, response.read()
            connection.close()

        asker = threading.Thread(target=ask)
        asker.start()
        worst_ms = 0.0
        while asker.is_alive():  # 3 million floats in JSON: the encoding takes a while
            worst_ms = max(worst_ms, _health_ms(server))
            time.sleep(0.05)
        asker.join()
        assert answer["status"] == 200
        outputs = json.loads(answer["body"])["outputs"]  # type: ignore[arg-type]
        assert outputs[0]["shape"] == [1, 3000000]
        np.testing.assert_allclose(outputs[0]["data"][:1000], 0.5 * np.sin(np.arange(1000)), atol=1e-6)
        assert worst_ms < 1000, worst_ms
    finally:
        stop_server(server)
