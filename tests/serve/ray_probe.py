"""The end-to-end probe of ``hone serve --ray`` that tests/serve/test_ray.py runs in .cache/ray-venv.

Run inside a network namespace that has only loopback (Ray binds every interface and the host's
address whatever it is told), e.g.::

    unshare --net --pid --fork --kill-child --mount-proc sh -c 'ip link set lo up && exec \\
        .cache/ray-venv/bin/python tests/serve/ray_probe.py --model tiny.onnx --weights W.npy'

It starts ``hone serve --ray`` (as ``python -m hone.cli``) with two replicas, waits for its ready line, then, as a
client from inside the namespace: concurrent JSON inference requests (checked against
``relu(x @ W)`` in numpy), one request with binary input and binary output (the binary tensor
extension), a gzip-compressed one, a malformed request and an unknown model, the
metadata/config/health routes; counts the replicas that answered (the ``hone-replica`` response
header); stops the server with SIGTERM.

The last stdout line is a JSON summary the test asserts on.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

MODEL_NAME = "tiny"
READY_TIMEOUT_S = 75.0
REPLICA_HEADER = "hone-replica"
BATCH_HEADER = "hone-batch-samples"
HEADER_LENGTH = "Inference-Header-Content-Length"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--port", type=int, default=8391)
    parser.add_argument("--requests", type=int, default=48)
    args = parser.parse_args()
    weights = np.load(args.weights)
    summary: dict[str, Any] = {"interfaces": sorted(name for _, name in socket.if_nameindex())}
    started = time.monotonic()
    server, ready_line = start_server(args.model, args.replicas, args.port)
    summary["ready_line"] = ready_line
    summary["startup_s"] = round(time.monotonic() - started, 1)
    url = f"http://127.0.0.1:{args.port}"
    try:
        summary.update(probe(url, weights, args.requests))
    finally:
        summary.update(stop_server(server))
    print(json.dumps(summary), flush=True)


def start_server(model: str, replicas: int, port: int) -> tuple[subprocess.Popen[str], str]:
    """The server process and its ready line (its stderr, Ray's logs, goes to ours)."""
    command = [
        sys.executable, "-m", "hone.cli", "serve", model, "--ray",
        "--name", MODEL_NAME, "--replicas", str(replicas), "--http-port", str(port),
        "--max-batch-size", "8", "--max-queue-delay-ms", "5",
    ]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(server.stdout or ()), daemon=True)
    reader.start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and server.poll() is None:
        if any("ready:" in line for line in lines):
            return server, next(line.strip() for line in lines if "ready:" in line)
        time.sleep(0.2)
    server.kill()
    raise SystemExit(f"the server printed no ready line within {READY_TIMEOUT_S} s: {lines}")


def stop_server(server: subprocess.Popen[str]) -> dict[str, Any]:
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    try:
        code = server.wait(timeout=45)
    except subprocess.TimeoutExpired:
        server.kill()
        code = "killed"
    return {"exit_code": code, "shutdown_s": round(time.monotonic() - started, 1)}


def probe(url: str, weights: np.ndarray, requests: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for route in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL_NAME}/ready"):
        results[route] = call(url + route)[0]
    results["server"] = json.loads(call(url + "/v2")[1])
    results["metadata"] = json.loads(call(f"{url}/v2/models/{MODEL_NAME}")[1])
    results["config"] = json.loads(call(f"{url}/v2/models/{MODEL_NAME}/config")[1])
    results.update(concurrent_json(url, weights, requests))
    results["binary"] = binary_request(url, weights)
    results["gzip"] = gzip_request(url, weights)
    results["bad_shape"] = error_of(call(f"{url}/v2/models/{MODEL_NAME}/infer", json_body([[1.0] * 7])))
    results["bad_json"] = error_of(call(f"{url}/v2/models/{MODEL_NAME}/infer", b"{not json"))
    results["unknown_model"] = error_of(call(f"{url}/v2/models/nope/infer", json_body([[1.0] * 8])))
    return results


def concurrent_json(url: str, weights: np.ndarray, requests: int) -> dict[str, Any]:
    """``requests`` JSON requests of 1-3 samples from 8 threads; outputs checked against numpy."""
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1 + i % 3, 8)).astype(np.float32) for i in range(requests)]

    def one(x: np.ndarray) -> tuple[bool, str | None, int, int]:
        status, body, headers = call(f"{url}/v2/models/{MODEL_NAME}/infer", json_body(x.tolist()))
        if status != 200:
            return False, None, 0, status
        output = json.loads(body)["outputs"][0]
        y = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
        correct = bool(np.allclose(y, np.maximum(x @ weights, 0), rtol=1e-5, atol=1e-5))
        return correct, headers.get(REPLICA_HEADER), int(headers.get(BATCH_HEADER, 0)), status

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, inputs))
    replicas = Counter(replica for _, replica, _, _ in answers if replica)
    return {
        "json_requests": len(answers),
        "json_correct": sum(ok for ok, _, _, _ in answers),
        "json_statuses": sorted({status for _, _, _, status in answers}),
        "replicas_seen": len(replicas),
        "requests_per_replica": sorted(replicas.values()),
        "largest_batch_samples": max(samples for _, _, samples, _ in answers),
    }


def binary_request(url: str, weights: np.ndarray) -> dict[str, Any]:
    """Binary input and binary output (Inference-Header-Content-Length both ways)."""
    x = np.arange(16, dtype=np.float32).reshape(2, 8) / 10 - 0.5
    header = json.dumps({
        "inputs": [{"name": "x", "shape": [2, 8], "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
    }).encode()
    status, body, headers = call(
        f"{url}/v2/models/{MODEL_NAME}/infer", header + x.tobytes(),
        {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"},
    )
    if status != 200:
        return {"status": status, "body": body.decode(errors="replace")}
    length = int(headers[HEADER_LENGTH.lower()])
    document = json.loads(body[:length])
    output = document["outputs"][0]
    y = np.frombuffer(body[length:], dtype="<f4").reshape(output["shape"])
    return {
        "status": status,
        "shape": output["shape"],
        "binary_data_size": output["parameters"]["binary_data_size"],
        "correct": bool(np.allclose(y, np.maximum(x @ weights, 0), rtol=1e-5, atol=1e-5)),
    }


def gzip_request(url: str, weights: np.ndarray) -> dict[str, Any]:
    """A gzip-compressed JSON request (Content-Encoding: gzip)."""
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8)
    status, body, _ = call(
        f"{url}/v2/models/{MODEL_NAME}/infer", gzip.compress(json_body(x.tolist())),
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    if status != 200:
        return {"status": status, "body": body.decode(errors="replace")}
    output = json.loads(body)["outputs"][0]
    y = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
    correct = bool(np.allclose(y, np.maximum(x @ weights, 0), rtol=1e-5, atol=1e-5))
    return {"status": status, "correct": correct}


def json_body(data: list[Any]) -> bytes:
    shape = [len(data), len(data[0])]
    return json.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": data}]}).encode()


def error_of(answer: tuple[int, bytes, dict[str, str]]) -> dict[str, Any]:
    status, body, _ = answer
    try:
        document = json.loads(body)
    except ValueError:
        document = {"unparsed": body.decode(errors="replace")}
    return {"status": status, "body": document}


def call(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, lower-cased headers) of a GET (or a POST with ``data``), errors included."""
    request = urllib.request.Request(url, data=data, headers=headers or {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read(), {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()}


if __name__ == "__main__":
    main()
