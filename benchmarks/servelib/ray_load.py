"""hone serve --ray under load: req/s and latency with 1 and 2 Ray Serve replicas (and plain hone serve).

Run: .cache/ray-venv/bin/python benchmarks/servelib/ray_load.py [--replicas 1,2] [--clients 8]
     [--seconds 5] [--warm-up-s 2] [--rounds 2] [--no-baseline]

The model is y = relu(x[b, 512] @ W[512, 2048]) (float32, dynamic batch, opset 17), built in a
temporary folder. For each replica count, ``python -m hone.serve.ray_serve`` serves it with
hone's default batching (max_batch_size 32, max_queue_delay_ms 2, Ray's ``@serve.batch``); after
``--warm-up-s`` of the same load, ``--clients`` closed-loop clients (threads of this process, one
keep-alive HTTP connection each) send one-sample requests for ``--seconds``: binary input (2 KiB)
and binary output (8 KiB), the binary tensor extension, so JSON number formatting is not what is measured.
The baseline is plain ``hone serve`` (one process, hone's own batcher, 1 instance) under the same
load. Each round measures every server once, in that order; the rows of every round are kept.
Clients and server share the machine's cores.

Ray binds every interface and the host's address whatever it is told, so the script re-runs itself
in a network namespace with only loopback (``unshare -n``; needs root) unless it is in one already.
Prints a table and writes benchmarks/results/ray-serve-probe-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
ROWS, COLS = 512, 2048
MODEL_NAME = "relu_matmul"
HEADER_LENGTH = "Inference-Header-Content-Length"
READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class LoadResult:
    round: int
    server: str
    replicas: int
    clients: int
    seconds: float
    requests: int
    errors: int
    req_per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    replicas_seen: int
    mean_batch_samples: float | None  # from the hone-batch-samples header (hone serve --ray only)
    startup_s: float


def main() -> None:
    args = parse_args()
    if not loopback_only():
        reexec_in_namespace()
    load_before = os.getloadavg()[0]  # other work on the machine skews every number
    print(f"load average (1 min) before: {load_before:.2f}")
    with tempfile.TemporaryDirectory() as folder:
        model, weights = save_model(Path(folder))
        results: list[LoadResult] = []
        for round_ in range(1, args.rounds + 1):  # rounds alternate the servers: drift hits them all
            if args.baseline:
                results.append(measure_hone_serve(model, weights, round_, args))
            for replicas in args.replicas:
                results.append(measure_ray(model, weights, replicas, round_, args))
    print_table(results)
    write_results(results, args, load_before)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=lambda text: [int(n) for n in text.split(",")], default=[1, 2])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warm-up-s", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-baseline", dest="baseline", action="store_false")
    parser.add_argument("--port", type=int, default=8471)
    return parser.parse_args()


# -- the namespace ---------------------------------------------------------------------------------


def loopback_only() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def reexec_in_namespace() -> None:
    """Run this script again with only loopback, and exit with its status.

    Its own PID namespace too, so no Ray process outlives it (--kill-child).
    """
    command = " ".join(["ip link set lo up && exec", *map(quote, [sys.executable, *sys.argv])])
    namespace = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
    sys.exit(subprocess.call([*namespace, "sh", "-c", command]))


def quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


# -- the model and the servers ---------------------------------------------------------------------


def save_model(folder: Path) -> tuple[Path, np.ndarray]:
    weights = (np.random.default_rng(0).standard_normal((ROWS, COLS)) / np.sqrt(ROWS)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        MODEL_NAME,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", ROWS])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", COLS])],
        [numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / f"{MODEL_NAME}.onnx"
    onnx.save(model, path)
    return path, weights


def measure_ray(
    model: Path, weights: np.ndarray, replicas: int, round_: int, args: argparse.Namespace
) -> LoadResult:
    command = [
        sys.executable, "-m", "hone.serve.ray_serve", str(model),
        "--replicas", str(replicas), "--http-port", str(args.port),
    ]
    return measure(round_, f"ray x{replicas}", replicas, command, weights, args)


def measure_hone_serve(model: Path, weights: np.ndarray, round_: int, args: argparse.Namespace) -> LoadResult:
    hone = Path(sys.executable).with_name("hone")
    command = [
        str(hone), "serve", str(model), "--http-port", str(args.port),
        "--grpc-port", "0", "--metrics-port", "0",
    ]
    return measure(round_, "hone serve", 1, command, weights, args)


def measure(
    round_: int, label: str, replicas: int, command: list[str], weights: np.ndarray, args: argparse.Namespace
) -> LoadResult:
    started = time.monotonic()
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    try:
        wait_ready(server)
        startup_s = time.monotonic() - started
        check_answer(args.port, weights)
        closed_loop(args.port, args.clients, args.warm_up_s)
        latencies, errors, seen, batches, seconds = closed_loop(args.port, args.clients, args.seconds)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    ms = np.array(latencies) * 1000
    return LoadResult(
        round=round_, server=label, replicas=replicas, clients=args.clients, seconds=round(seconds, 2),
        requests=len(latencies), errors=errors, req_per_s=round(len(latencies) / seconds, 1),
        p50_ms=round(float(np.percentile(ms, 50)), 2), p99_ms=round(float(np.percentile(ms, 99)), 2),
        mean_ms=round(float(ms.mean()), 2), replicas_seen=len(seen),
        mean_batch_samples=round(float(np.mean(batches)), 2) if batches else None,
        startup_s=round(startup_s, 1),
    )


def wait_ready(server: subprocess.Popen[str]) -> str:
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(server.stdout or ()), daemon=True).start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and server.poll() is None:
        ready = [line for line in lines if re.search(r"\bready: ", line)]
        if ready:
            return ready[0].strip()
        time.sleep(0.1)
    raise SystemExit(f"{' '.join(server.args)} printed no ready line: {lines}")


# -- the clients -----------------------------------------------------------------------------------


def request_body(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({
        "inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
    }).encode()
    headers = {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"}
    return header + x.tobytes(), headers


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    replica: str | None
    batch_samples: int | None
    header_length: int


def infer(connection: http.client.HTTPConnection, body: bytes, headers: dict[str, str]) -> Answer:
    connection.request("POST", f"/v2/models/{MODEL_NAME}/infer", body, headers)
    response = connection.getresponse()
    data = response.read()
    batch = response.getheader("hone-batch-samples")
    return Answer(
        response.status, data, response.getheader("hone-replica"), int(batch) if batch else None,
        int(response.getheader(HEADER_LENGTH) or 0),
    )


def check_answer(port: int, weights: np.ndarray) -> None:
    x = np.random.default_rng(1).standard_normal((3, ROWS)).astype(np.float32)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    answer = infer(connection, *request_body(x))
    connection.close()
    if answer.status != 200:
        raise SystemExit(f"the check request got {answer.status}: {answer.body[:500]!r}")
    y = np.frombuffer(answer.body[answer.header_length :], dtype="<f4").reshape(3, COLS)
    if not np.allclose(y, np.maximum(x @ weights, 0), rtol=1e-4, atol=1e-4):
        raise SystemExit("the server's answer differs from numpy's relu(x @ W)")


def closed_loop(
    port: int, clients: int, seconds: float
) -> tuple[list[float], int, set[str], list[int], float]:
    """Each client sends its next request when the previous one is answered, for ``seconds``."""
    body, headers = request_body(np.random.default_rng(2).standard_normal((1, ROWS)).astype(np.float32))
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    seen: set[str] = set()
    batches: list[int] = []
    start = time.perf_counter()
    deadline = start + seconds

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            answer = infer(connection, body, headers)
            if answer.status == 200:
                latencies[index].append(time.perf_counter() - sent)
            else:
                errors[index] += 1
            if answer.replica:
                seen.add(answer.replica)
            if answer.batch_samples:
                batches.append(answer.batch_samples)
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    return [value for each in latencies for value in each], sum(errors), seen, batches, elapsed


# -- output ----------------------------------------------------------------------------------------


def print_table(results: list[LoadResult]) -> None:
    print(f"{'round':>5} {'server':<12} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'errors':>6} {'replicas':>8} {'batch':>6} {'startup s':>9}")
    for r in results:
        batch = "-" if r.mean_batch_samples is None else f"{r.mean_batch_samples:.1f}"
        print(f"{r.round:>5} {r.server:<12} {r.clients:>7} {r.req_per_s:>8.1f} {r.p50_ms:>8.2f} "
              f"{r.p99_ms:>8.2f} {r.errors:>6} {r.replicas_seen:>8} {batch:>6} {r.startup_s:>9.1f}")


def write_results(results: list[LoadResult], args: argparse.Namespace, load_before: float) -> None:
    import ray

    import hone
    from hone.runtime import default_threads

    document = {
        "benchmark": "hone serve --ray, closed-loop load",
        "date": dt.date.today().isoformat(),
        "machine": {
            "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "physical_cores": default_threads(),
            "python": platform.python_version(), "network": "unshare -n, loopback only",
            "load_average_1m_before": round(load_before, 2),
        },
        "versions": {
            "hone": hone.__version__, "ray": ray.__version__, "onnxruntime": onnxruntime_version(),
        },
        "model": f"y = relu(x[b, {ROWS}] @ W[{ROWS}, {COLS}]) float32, opset 17",
        "request": "1 sample; binary input (2 KiB) and binary output (8 KiB)",
        "batching": "max_batch_size 32, max_queue_delay_ms 2 (hone's defaults); Ray: @serve.batch",
        "clients": f"{args.clients} closed-loop threads in one process, keep-alive, sharing the cores",
        "results": [asdict(result) for result in results],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"ray-serve-probe-{document['date']}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


if __name__ == "__main__":
    main()
