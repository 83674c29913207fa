"""Abuse benchmark for ``hone serve``: what a hostile client on the host costs everybody else.

Run: .venv/bin/python benchmarks/serve_abuse.py [--concurrency 8] [--window-s 6] [--attack-rate 100]
     [--attacks huge-header,long-url,...] [--out benchmarks/results/serve-abuse-<date>.json]

One real ``hone serve`` process (``python -m hone.cli serve REPO``, as tests/serve/test_clients.py
starts it) on 127.0.0.1, free ports, default limits, no token (the attacks are unauthenticated),
serving two tiny models from a temporary repository:

- ``lookup``: y = Gather(table[10, 4], ids), int64 ids (tests/serve/test_attacks.py): so cheap that
  the server's own HTTP and batching work, not compute, is the bottleneck. An id >= 10 is
  onnxruntime's INVALID_ARGUMENT for the whole batch it runs in (the poisoned-batch attack);
- ``logs``: y = Log(x), float x[N, D]: Log(0) = -inf, which JSON cannot carry (400), and the model
  the near-limit gzip bodies are sent to (one sample of millions of values: a request may carry at
  most max_batch_size = 32 samples).

What it measures. A steady valid load runs the whole time, in a separate process (so the attacker's
threads do not share its interpreter): a closed loop of ``--concurrency`` threads, each with one
http.client keep-alive connection, sending JSON infer requests for 4 random ids < 10 to ``lookup``
and checking every answer exactly against the table; every request's end time, latency and outcome
(correct, wrong, failed) is kept. Goodput is correct answers per second. A prober in the same
process GETs /v2/health/live every 0.2 s on a fresh connection. This process samples the server's
RSS and CPU time (psutil) every 0.1 s.

For every attack: a ``--window-s`` window with no attack (the baseline right before it, which
cancels the machine's drift), then the attack alongside the same load. The attacked window lasts
at least ``--window-s`` and until the attack is over (slowloris waits for its 408s at the
10 s header deadline, the unfinished bodies for their 408s at the 60 s body deadline). Attacks,
each bounded in count and time, loopback only, each from one attacker connection unless said.
Request floods send at most ``--attack-rate`` (100) requests per second, each after the answer to
the one before (a closed loop with a pace): unpaced, any cheap request answered at once (no batch
delay) wins a closed-loop race against the 8 valid clients on these 2 cores, whatever it costs,
and the ratios would measure the attacker's share of the CPU, not what each of its requests costs.
At 100/s (3% of the ~3,000 valid answers/s here) an attack request may cost the server up to about
3 valid ones before the goodput goal fails.

- ``huge-header``: requests with a 20 MB header, raw socket (431);
- ``long-url``: 20,000-byte URLs (414);
- ``slowloris``: 200 connections send half a request head, then one byte every ~2 s each (408 at
  the 10 s header deadline);
- ``unfinished-bodies``: 8 connections one after the other each declare a 60 MB infer body, send
  34 MiB of it at once and stall: 7 x 34 MiB fit in the 256 MiB in-flight budget, the 8th passes it
  (503); the 7 held ones get 408 at the 60 s body deadline. (34 MiB, not 30 MB: 8 x 30 MB = 229 MiB
  would never reach the budget.)
- ``gzip-bomb``: gzip infer bodies of 65 KB (67 MB of zeros: past the 1024x ratio cap and the 64 MiB
  body limit) and of 1 MB (1 GiB of zeros: far beyond the body limit), alternately (docs/serve.md
  says 413);
- ``gzip-near-json`` and ``gzip-near-binary``: gzip bodies (~400x) for ``logs`` that inflate to
  just under the limits, one at a time, asking for binary output (200: legal requests, the largest
  allowed): JSON of 15.9 MiB (the JSON limit is 16 MiB: 8.4 million one-digit values), and binary
  tensors of 63.9 MiB (the body limit is 64 MiB);
- ``deep-json``: 100,000 nested brackets, and a 5,000-digit integer (400);
- ``bad-shapes``: shapes [0, 1e20] and 70 dims over HTTP (400), and over gRPC shape
  [3, 6148914691236517206] (the int64 product wraps to 2) with 2 int64_contents and 70 dims
  (INVALID_ARGUMENT);
- ``poisoned-batch``: two attacker connections send ids out of range to ``lookup``, the valid
  load's model, so poisoned requests share batches with valid ones (400 each);
- ``non-finite-json``: ``logs`` asked for Log(0) = -inf in JSON (400);
- ``model-control``: POST /v2/repository/models/lookup/unload and /load without
  ``--model-control-mode explicit`` (403);
- ``connection-flood``: 600 idle connections opened as fast as possible (the default
  --max-connections is 1024; 600 is what this 2-core machine takes beside the load), held to the
  window's end, then closed.

Per attack: the statuses the attack got (counts; ``reset``/``closed``/``timeout`` when no answer
came), the valid load's goodput and p99 in the attacked window against its baseline (ratios), the
worst health latency, the server's peak RSS during the attack and its growth over the baseline
window's mean RSS, the server's CPU use, every valid answer that was wrong or failed, and the
valid answers lost per attack request ((baseline goodput - attacked goodput) / attack rate: about 1
when an attack request costs the server what a valid one does; much more is an amplification).

Goals per attack: goodput >= 90% of the baseline, p99 <= 2x the baseline, RSS growth < 256 MiB,
health always < 1 s, and no wrong valid answer. The statuses are checked against the expected ones
(docs/serve.md) and shown, but are not a goal. At the end the server gets SIGTERM and must exit 0;
every ``Traceback`` in its stderr is printed (a traceback for a client's error is a finding).

The machine has 2 cores, shared by the server, the load and the attacker: every attack costs the
server some CPU, so some of the goodput it loses is only its fair share of the cores. Prints one
table and writes benchmarks/results/serve-abuse-<date>.json (machine, load average before and
after, the server's flags, every number).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import gzip
import http.client
import json
import multiprocessing
import os
import queue
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hone.serve.budget import DEFAULT_MAX_INFLIGHT_BYTES
from hone.serve.http import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_JSON_BYTES

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
READY_LINE = re.compile(
    r"^hone serve: ready: (?P<models>.+) on http://(?P<host>[\d.]+):(?P<port>\d+) "
    r"\(grpc :(?P<grpc>\d+), metrics :(?P<metrics>\d+)\)$"
)
START_TIMEOUT_S = 120
MiB = 2**20

TABLE = np.arange(40, dtype=np.float32).reshape(10, 4)
LOOKUP_TEXT = f"""
<ir_version: 8, opset_import: ["" : 17]>
lookup (int64[N] ids) => (float[N, 4] y) <float[10, 4] table = {{{", ".join(str(v) for v in TABLE.ravel())}}}> {{
    y = Gather <axis = 0> (table, ids)
}}
"""
LOG_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
logs (float[N, D] x) => (float[N, D] y) {
    y = Log (x)
}
"""

# The server's limits, all at their defaults (docs/serve.md); the benchmark passes none of them.
DEFAULT_LIMITS = {
    "--max-header-bytes": 65536, "--max-url-bytes": 8192, "--header-timeout-s": 10, "--max-connections": 1024,
    "--keep-alive-s": 5, "--max-body-bytes": DEFAULT_MAX_BODY_BYTES, "--max-json-bytes": DEFAULT_MAX_JSON_BYTES,
    "--body-timeout-s": 60, "--max-inflight-bytes": DEFAULT_MAX_INFLIGHT_BYTES, "--token": None, "--model-control-mode": "none",
    "--max-batch-size": 32, "--max-queue-delay-ms": 2, "--instances": 1,
}
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 60.0

GOAL_GOODPUT_RATIO = 0.9
GOAL_P99_RATIO = 2.0
GOAL_RSS_GROWTH_MB = 256
GOAL_HEALTH_MS = 1000
PROBE_INTERVAL_S = 0.2
RSS_INTERVAL_S = 0.1
SETTLE_S = 1.0
VALID_IDS = 4
VALID_PATH = "/v2/models/lookup/infer"
JSON_HEADERS = {"Content-Type": "application/json"}


# -- the valid load (runs in its own process) ---------------------------------------------------------


def _valid_requests(count: int = 64) -> list[tuple[bytes, list[float]]]:
    rng = np.random.default_rng(0)
    bodies = []
    for _ in range(count):
        ids = rng.integers(0, 10, size=VALID_IDS)
        body = json.dumps({"inputs": [{"name": "ids", "shape": [VALID_IDS], "datatype": "INT64",
                                       "data": ids.tolist()}]}).encode()
        bodies.append((body, TABLE[ids].ravel().tolist()))
    return bodies


def load_worker(port: int, concurrency: int, stop: Any, started: Any, results: Any) -> None:
    """The closed-loop valid load and the health prober, until ``stop``; puts the records on ``results``."""
    requests = _valid_requests()
    records: list[list[tuple[float, float, int, int]]] = [[] for _ in range(concurrency)]
    probes: list[tuple[float, float, int]] = []

    def client(index: int) -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=30)
        mine = records[index]
        position = index
        while not stop.is_set():
            body, expected = requests[position % len(requests)]
            position += 1
            began = time.monotonic()
            correct = 0
            try:
                connection.request("POST", VALID_PATH, body=body, headers=JSON_HEADERS)
                response = connection.getresponse()
                data = response.read()
                status = response.status
                if status == 200:
                    output = json.loads(data)["outputs"][0]
                    correct = int(output["data"] == expected and output["shape"] == [VALID_IDS, 4])
                if response.will_close:
                    connection.close()
            except Exception:  # a failed request: counted, then a new connection
                status = -1
                connection.close()
            ended = time.monotonic()
            mine.append((ended, ended - began, status, correct))
            if status != 200:
                time.sleep(0.01)  # no busy spin on a refusing server
        connection.close()

    def prober() -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            began = time.monotonic()
            try:
                connection = http.client.HTTPConnection(HOST, port, timeout=10)
                connection.request("GET", "/v2/health/live")
                response = connection.getresponse()
                response.read()
                status = response.status
                connection.close()
            except Exception:
                status = -1
            probes.append((began, time.monotonic() - began, status))
            next_at += PROBE_INTERVAL_S
            time.sleep(max(0.0, next_at - time.monotonic()))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    threads.append(threading.Thread(target=prober, daemon=True))
    for thread in threads:
        thread.start()
    started.set()
    for thread in threads:
        thread.join(timeout=60)
    merged = np.array(sorted(r for mine in records for r in mine), dtype=np.float64).reshape(-1, 4)
    results.put({"requests": merged, "probes": np.array(probes, dtype=np.float64).reshape(-1, 3)})


# -- the server -------------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[str]
    command: list[str]
    line: str
    port: int
    grpc_port: int
    metrics_port: int
    stderr_lines: list[tuple[float, str]] = field(default_factory=list)  # (arrival time, line)
    samples: list[tuple[float, int, float]] = field(default_factory=list)  # (t, rss, cpu seconds)
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample_forever(self) -> None:
        import psutil

        process = psutil.Process(self.process.pid)
        while not self._stop.is_set():
            try:
                times = process.cpu_times()
                self.samples.append((time.monotonic(), process.memory_info().rss, times.user + times.system))
            except psutil.Error:
                return
            time.sleep(RSS_INTERVAL_S)


def build_repository(folder: Path) -> Path:
    import onnx

    root = folder / "repository"
    for name, text in (("lookup", LOOKUP_TEXT), ("logs", LOG_TEXT)):
        path = root / name / "1" / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(onnx.parser.parse_model(text), path)
    return root


def start_server(root: Path) -> Server:
    command = [sys.executable, "-m", "hone.cli", "serve", str(root), "--host", HOST,
               "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=ROOT)
    stderr_lines: list[tuple[float, str]] = []

    def drain(stream: Any, into: list[tuple[float, str]]) -> None:  # a full pipe would block the server's logging
        for line in stream:
            into.append((time.monotonic(), line.rstrip("\n")))

    threading.Thread(target=drain, args=(process.stderr, stderr_lines), daemon=True).start()
    watchdog = threading.Timer(START_TIMEOUT_S, process.kill)
    watchdog.start()
    try:
        line = process.stdout.readline().strip()  # type: ignore[union-attr]
    finally:
        watchdog.cancel()
    threading.Thread(target=drain, args=(process.stdout, []), daemon=True).start()
    match = READY_LINE.match(line)
    if match is None:
        process.kill()
        process.wait(timeout=10)
        time.sleep(0.5)
        raise SystemExit(f"hone serve did not print its ready line; stdout {line!r}, stderr:\n"
                         + "\n".join(text for _, text in stderr_lines[-40:]))
    server = Server(process, command, line, int(match["port"]), int(match["grpc"]), int(match["metrics"]),
                    stderr_lines)
    threading.Thread(target=server.sample_forever, daemon=True).start()
    return server


def stop_server(server: Server) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        code = server.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.process.kill()
        code = server.process.wait(timeout=10)
    server._stop.set()
    time.sleep(0.5)  # let the drain threads take the last lines
    return code


# -- attack helpers ----------------------------------------------------------------------------------


def _status_of(answer: bytes) -> str:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    if match:
        return match.group(1).decode()
    return "closed" if not answer else "garbage"


def _read_answer(sock: socket.socket, timeout_s: float) -> str:
    """The status of the first answer on ``sock`` (or why none came)."""
    sock.settimeout(timeout_s)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        return _status_of(data) if data else "reset"
    except TimeoutError:
        return _status_of(data) if data else "timeout"
    return _status_of(data)


def _raw_once(port: int, data: bytes, timeout_s: float = 10) -> str:
    with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-send: the answer may still be readable
        return _read_answer(sock, timeout_s)


@dataclass
class AttackResult:
    statuses: collections.Counter = field(default_factory=collections.Counter)
    sent: int = 0
    notes: list[str] = field(default_factory=list)


class Pace:
    """At most ``rate`` requests per second from every loop sharing it (slot k at start + k / rate)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.slot = 0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            at = self.start + self.slot / self.rate
            self.slot += 1
        time.sleep(max(0.0, at - time.monotonic()))


def _raw_loop(port: int, data: bytes, deadline: float, cap: int, rate: float) -> AttackResult:
    result = AttackResult()
    pace = Pace(rate)
    while time.monotonic() < deadline and result.sent < cap:
        pace.wait()
        try:
            result.statuses[_raw_once(port, data)] += 1
        except OSError as exc:
            result.statuses[f"error:{type(exc).__name__}"] += 1
        result.sent += 1
    return result


def _http_loop(port: int, requests: list[tuple[str, str, bytes, dict[str, str]]], deadline: float, cap: int,
               rate: float, connections: int = 1,
               check: Callable[[int, bytes, int], str | None] | None = None) -> AttackResult:
    """``connections`` keep-alive loops cycling through ``requests``, each waiting for its answer, at
    most ``rate`` requests per second in all, until ``deadline`` or ``cap`` requests in all."""
    result = AttackResult()
    lock = threading.Lock()
    pace = Pace(rate)

    def loop(offset: int) -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=60)
        index = offset
        while time.monotonic() < deadline:
            with lock:
                if result.sent >= cap:
                    break
                result.sent += 1
            pace.wait()
            if time.monotonic() >= deadline:
                break
            method, path, body, headers = requests[index % len(requests)]
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                status = str(response.status)
                if check is not None and (note := check(index % len(requests), data, response.status)):
                    with lock:
                        if len(result.notes) < 5:
                            result.notes.append(note)
                if response.will_close:
                    connection.close()
            except Exception as exc:
                status = f"error:{type(exc).__name__}"
                connection.close()
            index += 1
            with lock:
                result.statuses[status] += 1
        connection.close()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result


def _gzip(data: bytes, level: int = 9) -> bytes:
    return gzip.compress(data, compresslevel=level)


def _gzip_zeros(size: int, level: int = 9) -> bytes:
    """gzip of ``size`` zero bytes, compressed in slices (no buffer of ``size`` bytes)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    slice_ = bytes(16 * MiB)
    parts = []
    left = size
    while left > 0:
        piece = slice_ if left >= len(slice_) else bytes(left)
        parts.append(compressor.compress(piece))
        left -= len(piece)
    parts.append(compressor.flush())
    return b"".join(parts)


@dataclass
class Payloads:
    """Everything the attacks send, built before the server starts (so no attack pays for it)."""

    huge_header: bytes = b""
    long_url: bytes = b""
    bomb_small: bytes = b""
    bomb_large: bytes = b""
    near_json: bytes = b""
    near_json_inflated: int = 0
    near_binary: bytes = b""
    near_binary_inflated: int = 0
    near_binary_header: int = 0
    near_binary_values: int = 0
    near_json_values: int = 0
    deep_json: bytes = b""
    big_int: bytes = b""
    shape_huge: bytes = b""
    shape_rank: bytes = b""
    poison: list[bytes] = field(default_factory=list)
    non_finite: bytes = b""
    idle_body: bytes = b""


def build_payloads() -> Payloads:
    p = Payloads()
    p.huge_header = (b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (20 * 1000 * 1000)
                     + b"\r\n\r\n")
    p.long_url = b"GET /v2/health/live?" + b"q" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    p.bomb_small = _gzip_zeros(67 * 1000 * 1000)  # ~65 KB
    p.bomb_large = _gzip_zeros(2**30, level=6)  # ~1 MB
    rng = np.random.default_rng(1)

    # JSON for logs that inflates to just under the JSON limit (--max-json-bytes). Mostly "1," (which gzip
    # shrinks ~1000x, past the server's 1024x ratio cap) with a run of random digits in front, so
    # the body compresses ~400x: a legal gzip body.
    json_limit = DEFAULT_MAX_JSON_BYTES - 64 * 1024
    template = '{{"inputs": [{{"name": "x", "shape": [1, {rows}], "datatype": "FP32", "data": [{data}]}}], ' \
               '"parameters": {{"binary_data_output": true}}}}'
    overhead = len(template.format(rows=0, data="")) + 16
    values = (json_limit - overhead) // 2
    random_count = 40_000
    digits = ",".join(str(v) for v in rng.integers(1, 10, size=random_count))
    data = digits + ",1" * (values - random_count)
    text = template.format(rows=values, data=data).encode()
    p.near_json, p.near_json_inflated, p.near_json_values = _gzip(text), len(text), values

    # Binary tensors that inflate to just under 64 MiB, the body limit: 1.0f repeated, random floats
    # in [1, 2) in front so the ratio stays below the 1024x cap.
    body_limit = 64 * MiB - 64 * 1024
    values = (body_limit - 512) // 4
    header = json.dumps({"inputs": [{"name": "x", "shape": [1, values], "datatype": "FP32",
                                     "parameters": {"binary_data_size": values * 4}}],
                         "parameters": {"binary_data_output": True}}).encode()
    floats = np.ones(values, dtype="<f4")
    floats[:30_000] = rng.uniform(1, 2, size=30_000)
    raw = header + floats.tobytes()
    p.near_binary, p.near_binary_inflated = _gzip(raw, level=6), len(raw)
    p.near_binary_header, p.near_binary_values = len(header), values

    p.deep_json = ('{"inputs": [{"name": "ids", "shape": [1], "datatype": "INT64", "data": '
                   + "[" * 100_000 + "1" + "]" * 100_000 + "}]}").encode()
    p.big_int = ('{"inputs": [{"name": "ids", "shape": [1], "datatype": "INT64", "data": ['
                 + "7" * 5000 + "]}]}").encode()
    p.shape_huge = (b'{"inputs": [{"name": "ids", "shape": [0, 100000000000000000000], "datatype": "INT64", '
                    b'"data": []}]}')
    p.shape_rank = ('{"inputs": [{"name": "ids", "shape": [' + ", ".join(["1"] * 70)
                    + '], "datatype": "INT64", "data": [1]}]}').encode()
    for bad in ([3, 1000], [10], [0, 1, 2, 99], [-11]):
        p.poison.append(json.dumps({"inputs": [{"name": "ids", "shape": [len(bad)], "datatype": "INT64",
                                                "data": bad}]}).encode())
    p.non_finite = json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32",
                                           "data": [0.0, 1.0]}]}).encode()
    return p


# -- the attacks -------------------------------------------------------------------------------------


@dataclass
class Context:
    server: Server
    payloads: Payloads
    rate: float  # requests per second, at most, of each flood


def attack_huge_header(ctx: Context, deadline: float) -> AttackResult:
    return _raw_loop(ctx.server.port, ctx.payloads.huge_header, deadline, cap=200, rate=ctx.rate)


def attack_long_url(ctx: Context, deadline: float) -> AttackResult:
    return _raw_loop(ctx.server.port, ctx.payloads.long_url, deadline, cap=5000, rate=ctx.rate)


def attack_slowloris(ctx: Context, deadline: float, count: int = 200) -> AttackResult:
    result = AttackResult()
    head = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: "
    open_: dict[int, socket.socket] = {}
    opened_at = time.monotonic()
    for _ in range(count):
        try:
            sock = socket.create_connection((HOST, ctx.server.port), timeout=5)
            sock.sendall(head)
            sock.setblocking(False)
            open_[sock.fileno()] = sock
        except OSError as exc:
            result.statuses[f"connect:{type(exc).__name__}"] += 1
        result.sent += 1
    result.notes.append(f"{len(open_)} connections opened in {time.monotonic() - opened_at:.2f} s")
    give_up = time.monotonic() + HEADER_TIMEOUT_S + 8
    trickle = list(open_)
    turn = 0
    answered_at: list[float] = []
    while open_ and time.monotonic() < give_up:
        readable, _, _ = select.select(list(open_.values()), [], [], 0.01)
        for sock in readable:
            try:
                answer = sock.recv(4096)
                status = _status_of(answer)
            except ConnectionResetError:
                status = "reset"
            result.statuses[status] += 1
            answered_at.append(time.monotonic() - opened_at)
            open_.pop(sock.fileno())
            sock.close()
        # one byte to one connection every 10 ms: each gets a byte about every 2 s
        while trickle and trickle[turn % len(trickle)] not in open_:
            trickle.pop(turn % len(trickle))
        if trickle:
            sock = open_[trickle[turn % len(trickle)]]
            try:
                sock.send(b"a")
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                pass
            turn += 1
    for sock in open_.values():
        result.statuses["timeout"] += 1
        sock.close()
    if answered_at:
        result.notes.append(f"answers came {min(answered_at):.1f}-{max(answered_at):.1f} s after the first connect")
    return result


def attack_unfinished_bodies(ctx: Context, deadline: float, count: int = 8) -> AttackResult:
    result = AttackResult()
    declared = 60 * 1000 * 1000
    sent_bytes = 34 * MiB
    head = (b"POST /v2/models/lookup/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(declared).encode() + b"\r\n\r\n")
    body = b" " * sent_bytes
    sockets: list[socket.socket] = []
    began = time.monotonic()
    for index in range(count):
        try:
            sock = socket.create_connection((HOST, ctx.server.port), timeout=20)
            sock.sendall(head)
            sock.sendall(body)
            sockets.append(sock)
        except TimeoutError:
            result.statuses["send stalled"] += 1
            sockets.append(sock)
        except (BrokenPipeError, ConnectionResetError):
            result.notes.append(f"connection {index}: refused mid-send")
            sockets.append(sock)
        result.sent += 1
    result.notes.append(f"{count} x {sent_bytes / MiB:.0f} MiB sent in {time.monotonic() - began:.2f} s")
    waits: dict[str, list[float]] = collections.defaultdict(list)
    answers: list[str] = [""] * len(sockets)

    def wait(index: int, sock: socket.socket) -> None:
        answers[index] = _read_answer(sock, BODY_TIMEOUT_S + 10)
        waits[answers[index]].append(time.monotonic() - began)
        sock.close()

    threads = [threading.Thread(target=wait, args=item) for item in enumerate(sockets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for answer in answers:
        result.statuses[answer] += 1
    result.notes.append("answer order " + " ".join(answers))
    for status, times in sorted(waits.items()):
        result.notes.append(f"{status} after {min(times):.1f}-{max(times):.1f} s")
    return result


def attack_gzip_bomb(ctx: Context, deadline: float) -> AttackResult:
    p = ctx.payloads
    headers = {**JSON_HEADERS, "Content-Encoding": "gzip"}
    requests = [("POST", VALID_PATH, p.bomb_small, headers), ("POST", VALID_PATH, p.bomb_large, headers)]
    result = _http_loop(ctx.server.port, requests, deadline, cap=400, rate=ctx.rate)
    result.notes.append(f"bodies {len(p.bomb_small)} B (67 MB of zeros) and {len(p.bomb_large)} B (1 GiB of zeros)")
    return result


def attack_gzip_near_json(ctx: Context, deadline: float) -> AttackResult:
    return _gzip_near_limit(ctx, deadline, 0)


def attack_gzip_near_binary(ctx: Context, deadline: float) -> AttackResult:
    return _gzip_near_limit(ctx, deadline, 1)


def _gzip_near_limit(ctx: Context, deadline: float, which: int) -> AttackResult:
    p = ctx.payloads
    path = "/v2/models/logs/infer"
    requests = [
        ("POST", path, p.near_json, {**JSON_HEADERS, "Content-Encoding": "gzip"}),
        ("POST", path, p.near_binary, {"Content-Type": "application/octet-stream", "Content-Encoding": "gzip",
                                       "Inference-Header-Content-Length": str(p.near_binary_header)}),
    ]
    expected_bytes = [p.near_json_values * 4, p.near_binary_values * 4]

    def check(index: int, data: bytes, status: int) -> str | None:
        if status != 200:
            return f"{['json', 'binary'][index]}: {status} {data[:300]!r}"
        header = json.loads(data[: len(data) - expected_bytes[index]])
        if header["outputs"][0]["parameters"]["binary_data_size"] != expected_bytes[index]:
            return f"{['json', 'binary'][index]}: answer of the wrong size"
        return None

    result = _http_loop(ctx.server.port, requests[which:which + 1], deadline, cap=6, rate=ctx.rate,
                        check=lambda index, data, status: check(which, data, status))
    result.notes.append([f"json {len(p.near_json)} B -> {p.near_json_inflated / MiB:.2f} MiB",
                         f"binary {len(p.near_binary)} B -> {p.near_binary_inflated / MiB:.2f} MiB"][which])
    return result


def attack_deep_json(ctx: Context, deadline: float) -> AttackResult:
    p = ctx.payloads
    requests = [("POST", VALID_PATH, p.deep_json, JSON_HEADERS), ("POST", VALID_PATH, p.big_int, JSON_HEADERS)]
    return _http_loop(ctx.server.port, requests, deadline, cap=5000, rate=ctx.rate)


def attack_bad_shapes(ctx: Context, deadline: float) -> AttackResult:
    import grpc

    from hone.serve import triton_proto

    messages = triton_proto.load()
    wrap = messages["ModelInferRequest"](model_name="lookup")
    tensor = wrap.inputs.add(name="ids", datatype="INT64", shape=[3, 6148914691236517206])
    tensor.contents.int64_contents.extend([1, 2])
    rank = messages["ModelInferRequest"](model_name="lookup")
    rank.inputs.add(name="ids", datatype="INT64", shape=[1] * 70)
    rank.raw_input_contents.append(np.array([1], dtype="<i8").tobytes())
    channel = grpc.insecure_channel(f"{HOST}:{ctx.server.grpc_port}")
    infer = channel.unary_unary(f"/{triton_proto.SERVICE}/ModelInfer",
                                request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=messages["ModelInferResponse"].FromString)
    p = ctx.payloads
    requests = [("POST", VALID_PATH, p.shape_huge, JSON_HEADERS), ("POST", VALID_PATH, p.shape_rank, JSON_HEADERS)]
    result = AttackResult()
    grpc_notes: set[str] = set()

    def grpc_loop() -> None:
        index = 0
        pace = Pace(ctx.rate / 2)
        while time.monotonic() < deadline and index < 3000:
            pace.wait()
            try:
                infer([wrap, rank][index % 2], timeout=10)
                result.statuses["grpc:OK"] += 1
            except grpc.RpcError as exc:
                result.statuses[f"grpc:{exc.code().name}"] += 1
                if len(grpc_notes) < 2:
                    grpc_notes.add(f"grpc: {exc.details()[:160]}")
            index += 1
        result.sent += index

    grpc_thread = threading.Thread(target=grpc_loop)
    grpc_thread.start()
    http_result = _http_loop(ctx.server.port, requests, deadline, cap=3000, rate=ctx.rate / 2)
    grpc_thread.join()
    channel.close()
    result.statuses.update(http_result.statuses)
    result.sent += http_result.sent
    result.notes.extend(sorted(grpc_notes))
    return result


def attack_poisoned_batch(ctx: Context, deadline: float) -> AttackResult:
    requests = [("POST", VALID_PATH, body, JSON_HEADERS) for body in ctx.payloads.poison]
    return _http_loop(ctx.server.port, requests, deadline, cap=6000, rate=ctx.rate, connections=2)


def attack_non_finite(ctx: Context, deadline: float) -> AttackResult:
    requests = [("POST", "/v2/models/logs/infer", ctx.payloads.non_finite, JSON_HEADERS)]
    return _http_loop(ctx.server.port, requests, deadline, cap=5000, rate=ctx.rate)


def attack_model_control(ctx: Context, deadline: float) -> AttackResult:
    requests = [("POST", "/v2/repository/models/lookup/unload", b"", {}),
                ("POST", "/v2/repository/models/lookup/load", b"", {})]
    return _http_loop(ctx.server.port, requests, deadline, cap=5000, rate=ctx.rate)


def attack_connection_flood(ctx: Context, deadline: float, count: int = 600) -> AttackResult:
    result = AttackResult()
    held: list[socket.socket] = []
    began = time.monotonic()
    for _ in range(count):
        if time.monotonic() >= deadline:
            break
        try:
            held.append(socket.create_connection((HOST, ctx.server.port), timeout=5))
        except OSError as exc:
            result.statuses[f"connect:{type(exc).__name__}"] += 1
        result.sent += 1
    result.notes.append(f"{len(held)} connections open in {time.monotonic() - began:.2f} s")
    time.sleep(max(0.0, deadline - time.monotonic()))
    for sock in held:  # what the server did with each idle connection before we let go
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            try:
                data = sock.recv(4096)
                result.statuses["closed by server" if not data else _status_of(data)] += 1
            except ConnectionResetError:
                result.statuses["reset"] += 1
        else:
            result.statuses["held"] += 1
        sock.close()
    return result


@dataclass(frozen=True)
class Attack:
    name: str
    run: Callable[[Context, float], AttackResult]
    expected: tuple[str, ...]
    what: str
    flood: bool = True  # a stream of requests (not connections held open): lost per request makes sense


ATTACKS = (
    Attack("huge-header", attack_huge_header, ("431",), "20 MB header, repeated, raw socket"),
    Attack("long-url", attack_long_url, ("414",), "20,000-byte URLs"),
    Attack("slowloris", attack_slowloris, ("408",), "200 connections, half a head, a byte every ~2 s", False),
    Attack("unfinished-bodies", attack_unfinished_bodies, ("503", "408"),
           "8 x (60 MB declared, 34 MiB sent, then stalled)", False),
    Attack("gzip-bomb", attack_gzip_bomb, ("413",), "gzip 65 KB -> 67 MB and 1 MB -> 1 GiB of zeros"),
    Attack("gzip-near-json", attack_gzip_near_json, ("200",), "gzip JSON just under --max-json-bytes (one-digit values)"),
    Attack("gzip-near-binary", attack_gzip_near_binary, ("200",), "gzip 167 KB -> binary tensor of 63.9 MiB"),
    Attack("deep-json", attack_deep_json, ("400",), "100,000 nested brackets; a 5,000-digit integer"),
    Attack("bad-shapes", attack_bad_shapes, ("400", "grpc:INVALID_ARGUMENT"),
           "[0, 1e20], 70 dims (HTTP); [3, 6148914691236517206], 70 dims (gRPC)"),
    Attack("poisoned-batch", attack_poisoned_batch, ("400",), "ids out of range into the load's model, 2 connections"),
    Attack("non-finite-json", attack_non_finite, ("400",), "Log(0) = -inf asked for in JSON"),
    Attack("model-control", attack_model_control, ("403",), "unload/load without --model-control-mode explicit"),
    Attack("connection-flood", attack_connection_flood, ("held",), "600 idle connections, held, then closed", False),
)


# -- measuring -------------------------------------------------------------------------------------


def window_stats(requests: np.ndarray, probes: np.ndarray, samples: np.ndarray, start: float, end: float,
                 rss_end: float | None = None) -> dict[str, Any]:
    """The valid load, health and the server's RSS and CPU between ``start`` and ``end``."""
    inside = requests[(requests[:, 0] >= start) & (requests[:, 0] < end)]
    duration = end - start
    correct = int(inside[:, 3].sum()) if len(inside) else 0
    ok_status = inside[:, 2] == 200
    wrong = int((ok_status & (inside[:, 3] == 0)).sum())
    failed_codes = collections.Counter(str(int(code)) for code in inside[~ok_status, 2])
    latencies_ms = inside[:, 1] * 1000
    probed = probes[(probes[:, 0] >= start) & (probes[:, 0] < end)]
    in_rss = samples[(samples[:, 0] >= start) & (samples[:, 0] < (rss_end or end))]
    in_cpu = samples[(samples[:, 0] >= start) & (samples[:, 0] < end)]
    cpu = (float((in_cpu[-1, 2] - in_cpu[0, 2]) / (in_cpu[-1, 0] - in_cpu[0, 0]))
           if len(in_cpu) > 1 else float("nan"))
    return {
        "start_s": start,
        "duration_s": duration,
        "requests": int(len(inside)),
        "correct": correct,
        "wrong": wrong,
        "failed": int((~ok_status).sum()),
        "failed_statuses": dict(failed_codes),  # -1: no answer (connection error or timeout)
        "goodput_per_s": correct / duration if duration > 0 else float("nan"),
        "p50_ms": float(np.percentile(latencies_ms, 50)) if len(inside) else float("nan"),
        "p99_ms": float(np.percentile(latencies_ms, 99)) if len(inside) else float("nan"),
        "max_ms": float(latencies_ms.max()) if len(inside) else float("nan"),
        "health_probes": int(len(probed)),
        "health_max_ms": float(probed[:, 1].max() * 1000) if len(probed) else float("nan"),
        "health_failed": int((probed[:, 2] != 200).sum()) if len(probed) else 0,
        "rss_mean_mb": float(in_rss[:, 1].mean() / MiB) if len(in_rss) else float("nan"),
        "rss_peak_mb": float(in_rss[:, 1].max() / MiB) if len(in_rss) else float("nan"),
        "server_cpu_cores": cpu,
    }


def evaluate(baseline: dict[str, Any], attacked: dict[str, Any]) -> dict[str, Any]:
    goodput_ratio = attacked["goodput_per_s"] / baseline["goodput_per_s"] if baseline["goodput_per_s"] else float("nan")
    p99_ratio = attacked["p99_ms"] / baseline["p99_ms"] if baseline["p99_ms"] else float("nan")
    rss_growth = attacked["rss_peak_mb"] - baseline["rss_mean_mb"]
    health = max(attacked["health_max_ms"], 0.0)
    health_ok = health < GOAL_HEALTH_MS and attacked["health_failed"] == 0 and attacked["health_probes"] > 0
    goals = {
        "goodput": bool(goodput_ratio >= GOAL_GOODPUT_RATIO),
        "p99": bool(p99_ratio <= GOAL_P99_RATIO),
        "rss": bool(rss_growth < GOAL_RSS_GROWTH_MB),
        "health": bool(health_ok),
        "correct": attacked["wrong"] == 0,
    }
    return {"goodput_ratio": goodput_ratio, "p99_ratio": p99_ratio, "rss_growth_mb": rss_growth,
            "health_max_ms": health, "goals": goals, "goals_met": all(goals.values())}


LEVEL = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)\s")


def log_records(lines: list[tuple[float, str]]) -> list[tuple[float, str, str]]:
    """The server's log records (time, level, text): rich writes one record as a line that starts
    with its level and continuation lines indented under it; any other line is its own record."""
    records: list[list[Any]] = []
    for at, line in lines:
        match = LEVEL.match(line)
        if match or not records or not line.startswith(" "):
            records.append([at, match.group(1) if match else "", line.strip()])
        else:
            records[-1][2] += " " + line.strip()
    return [(at, level, re.sub(r"\s+", " ", text)) for at, level, text in records]


def tracebacks(lines: list[tuple[float, str]]) -> list[str]:
    """Every traceback in the server's stderr (plain or rich's boxed one), with the record before it
    and up to 60 lines of it (to the next log record)."""
    texts = [text for _, text in lines]
    found = []
    index = 0
    while index < len(texts):
        if "Traceback" in texts[index]:
            start = index - 1
            while start > 0 and not LEVEL.match(texts[start]) and index - start < 5:
                start -= 1
            end = min(index + 60, len(texts))
            for probe in range(index + 1, end):
                if LEVEL.match(texts[probe]):  # the next record
                    end = probe
                    break
            found.append("\n".join(texts[max(0, start):end]))
            index = end
        else:
            index += 1
    return found


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--window-s", type=float, default=6.0)
    parser.add_argument("--attack-rate", type=float, default=100.0,
                        help="requests per second, at most, of each request flood (each still waits for its answers)")
    parser.add_argument("--attacks", default=",".join(a.name for a in ATTACKS),
                        help="comma-separated, from: " + ", ".join(a.name for a in ATTACKS))
    parser.add_argument("--out", default=None, help="default benchmarks/results/serve-abuse-<date>.json")
    args = parser.parse_args()
    known = {a.name for a in ATTACKS}
    args.attacks = [name for name in args.attacks.split(",") if name]
    unknown = [name for name in args.attacks if name not in known]
    if unknown:
        parser.error(f"unknown attacks {unknown}")
    return args


def main() -> int:
    from rich.console import Console

    from hone.bench.sweep import machine_summary
    from hone.results import write_json

    console = Console(width=max(Console().width, 230))
    args = parse_args()
    began = time.monotonic()
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"serve-abuse-{dt.date.today().isoformat()}.json")
    machine = machine_summary()
    load_before = os.getloadavg()
    console.print(f"[bold]serve-abuse[/]: {machine['cpu']}, {machine['logical_cores']} cores, "
                  f"load average {load_before[0]:.2f}; building payloads")
    payloads = build_payloads()
    folder = Path(tempfile.mkdtemp(prefix="hone-serve-abuse-"))
    server = start_server(build_repository(folder))
    console.print(server.line)
    context = multiprocessing.get_context("spawn")
    stop, started, results = context.Event(), context.Event(), context.Queue()
    worker = context.Process(target=load_worker, args=(server.port, args.concurrency, stop, started, results))
    worker.start()
    if not started.wait(60):
        raise SystemExit("the load process did not start")
    time.sleep(2.0)  # warm: connections open, the allocator and caches settled
    phases: list[dict[str, Any]] = []
    selected = [a for a in ATTACKS if a.name in args.attacks]
    ctx = Context(server, payloads, args.attack_rate)
    for attack in selected:
        if server.process.poll() is not None:
            console.print(f"[red]the server exited ({server.process.returncode}) before {attack.name}[/]")
            break
        base_start = time.monotonic()
        time.sleep(args.window_s)
        base_end = attack_start = time.monotonic()
        holder: dict[str, Any] = {}

        def run(attack: Attack = attack, deadline: float = attack_start + args.window_s) -> None:
            try:
                holder["result"] = attack.run(ctx, deadline)
            except Exception as exc:  # the attacker's own failure: recorded, the run goes on
                holder["error"] = f"{type(exc).__name__}: {exc}"

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(timeout=args.window_s + BODY_TIMEOUT_S + 30)
        time.sleep(max(0.0, attack_start + args.window_s - time.monotonic()))
        attack_end = time.monotonic()
        result: AttackResult = holder.get("result") or AttackResult(notes=[holder.get("error", "did not finish")])
        console.print(f"  {attack.name}: {dict(result.statuses)} in {attack_end - attack_start:.1f} s")
        time.sleep(SETTLE_S)
        phases.append({"attack": attack, "result": result, "base": (base_start, base_end),
                       "window": (attack_start, attack_end), "settled": time.monotonic(),
                       "server_alive": server.process.poll() is None})
    rss_end_mb = server.samples[-1][1] / MiB if server.samples else float("nan")
    stop.set()
    try:
        records = results.get(timeout=120)
    except queue.Empty:
        raise SystemExit("the load process sent no records") from None
    worker.join(timeout=30)
    code = stop_server(server)
    shutil.rmtree(folder, ignore_errors=True)
    load_after = os.getloadavg()
    samples = np.array(server.samples, dtype=np.float64).reshape(-1, 3)
    logged = log_records(server.stderr_lines)

    rows = []
    for phase in phases:
        attack: Attack = phase["attack"]
        result: AttackResult = phase["result"]
        baseline = window_stats(records["requests"], records["probes"], samples, *phase["base"])
        attacked = window_stats(records["requests"], records["probes"], samples, *phase["window"],
                                rss_end=phase["settled"])
        verdict = evaluate(baseline, attacked)
        duration = phase["window"][1] - phase["window"][0]
        statuses = dict(sorted(result.statuses.items(), key=lambda kv: -kv[1]))
        during = [(level, text) for at, level, text in logged if phase["window"][0] <= at < phase["settled"]]
        kinds = collections.Counter(re.sub(r"\d+", "N", text)[:90] for _, text in during)
        rows.append({
            "attack": attack.name,
            "what": attack.what,
            "attack_statuses": statuses,
            "expected_statuses": list(attack.expected),
            "statuses_as_expected": bool(statuses) and set(statuses) <= set(attack.expected),
            "attack_requests": result.sent,
            "attack_requests_per_s": result.sent / duration,
            "valid_lost_per_attack_request": ((baseline["goodput_per_s"] - attacked["goodput_per_s"])
                                              / (result.sent / duration) if result.sent and attack.flood
                                              else float("nan")),
            "attack_notes": result.notes,
            "baseline": baseline,
            "attacked": attacked,
            "server_alive_after": phase["server_alive"],
            "server_log_records": len(during),
            "server_log_levels": dict(collections.Counter(level or "other" for level, _ in during)),
            "server_log_kinds": dict(kinds.most_common(4)),
            "server_log_samples": list(dict.fromkeys(text[:400] for _, text in during))[:3],
            **verdict,
        })
    show(console, rows)
    found = tracebacks(server.stderr_lines)
    levels = collections.Counter(level or "other" for _, level, _ in logged)
    runtime = time.monotonic() - began
    console.print(f"server exit status {code} (goal 0); stderr {len(server.stderr_lines)} lines, "
                  f"{len(logged)} records {dict(levels)}; "
                  f"{len(found)} traceback(s); runtime {runtime:.0f} s; load average {load_before[0]:.2f} -> "
                  f"{load_after[0]:.2f}")
    for text in found[:5]:
        console.print("[red]Traceback in the server's stderr:[/]")
        console.print(text, markup=False, highlight=False)
    failed = [row["attack"] for row in rows if not row["goals_met"]]
    console.print(f"goals met: {len(rows) - len(failed)}/{len(rows)}"
                  + (f"; missed: {', '.join(failed)}" if failed else ""))
    unexpected = [row["attack"] for row in rows if not row["statuses_as_expected"]]
    if unexpected:
        console.print(f"statuses other than the expected: {', '.join(unexpected)}")
    result_document = {
        "benchmark": "serve-abuse",
        "date": dt.date.today().isoformat(),
        "machine": machine,
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
        "settings": {"concurrency": args.concurrency, "window_s": args.window_s, "attack_rate_per_s": args.attack_rate,
                     "valid_request": f"JSON infer of {VALID_IDS} int64 ids < 10 to lookup, answers checked exactly",
                     "probe_interval_s": PROBE_INTERVAL_S, "rss_interval_s": RSS_INTERVAL_S},
        "goals": {"goodput_ratio_min": GOAL_GOODPUT_RATIO, "p99_ratio_max": GOAL_P99_RATIO,
                  "rss_growth_mb_max": GOAL_RSS_GROWTH_MB, "health_ms_max": GOAL_HEALTH_MS,
                  "wrong_answers": 0},
        "server": {"command": server.command[1:], "ready_line": server.line, "limits": DEFAULT_LIMITS,
                   "exit_status": code, "stderr_lines": len(server.stderr_lines), "log_records": len(logged),
                   "log_levels": dict(levels), "tracebacks": found,
                   "stderr_tail": [text for _, text in server.stderr_lines[-40:]]},
        "valid_load_total": {"requests": int(len(records["requests"])),
                             "correct": int(records["requests"][:, 3].sum()),
                             "wrong": int(((records["requests"][:, 2] == 200)
                                           & (records["requests"][:, 3] == 0)).sum())},
        "attacks": rows,
        "server_rss_mb": {"after_start": server.samples[0][1] / MiB if server.samples else None,
                          "peak": float(samples[:, 1].max() / MiB) if len(samples) else None,
                          "at_end_of_attacks": rss_end_mb},
        "runtime_s": runtime,
    }
    path = write_json(result_document, out, force=True)
    console.print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0 if code == 0 and not found else 1


def show(console: Any, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="hone serve under attack (valid load: attacked window / baseline right before)")
    for name, justify in (("attack", "left"), ("attack statuses", "left"), ("att. req/s", "right"),
                          ("lost / att. req", "right"),
                          ("goodput /s", "right"), ("goodput ratio", "right"), ("p99 ms", "right"),
                          ("p99 ratio", "right"), ("health max ms", "right"), ("RSS growth MB", "right"),
                          ("wrong / failed", "right"), ("goals met", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        statuses = ", ".join(f"{k} x{v}" for k, v in row["attack_statuses"].items())
        if not row["statuses_as_expected"]:
            statuses += f" [yellow](expected {'/'.join(row['expected_statuses'])})[/]"
        base, att = row["baseline"], row["attacked"]
        missed = [goal for goal, met in row["goals"].items() if not met]
        table.add_row(
            row["attack"], statuses, f"{row['attack_requests_per_s']:.0f}",
            f"{row['valid_lost_per_attack_request']:.1f}" if row["valid_lost_per_attack_request"] is not None
            and np.isfinite(row["valid_lost_per_attack_request"]) else "-",
            f"{base['goodput_per_s']:.0f} -> {att['goodput_per_s']:.0f}",
            _ratio(row["goodput_ratio"], row["goals"]["goodput"]),
            f"{base['p99_ms']:.1f} -> {att['p99_ms']:.1f}", _ratio(row["p99_ratio"], row["goals"]["p99"]),
            _mark(f"{row['health_max_ms']:.0f}", row["goals"]["health"]),
            _mark(f"{row['rss_growth_mb']:.0f}", row["goals"]["rss"]),
            _mark(f"{att['wrong']} / {att['failed']}", row["goals"]["correct"]),
            "[green]yes[/]" if row["goals_met"] else f"[red]no: {', '.join(missed)}[/]",
        )
    console.print(table)


def _ratio(value: float, met: bool) -> str:
    return _mark(f"{value:.2f}", met)


def _mark(text: str, met: bool) -> str:
    return text if met else f"[red]{text}[/]"


if __name__ == "__main__":
    sys.exit(main())
