"""Start ``hone serve`` or the PyTriton baseline as a child process for a benchmark, wait until it
says it is ready, and stop it (SIGTERM, then kill) on the way out.

The benchmark drives both servers from outside with perf_analyzer, so it needs them as processes
on known ports: hone picks free ports itself (``--http-port 0``) and says which in its ready line;
PyTriton's Triton needs ports given, so free ones are picked here.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HONE = ROOT / ".venv" / "bin" / "hone"
PYTRITON_PYTHON = ROOT / ".cache" / "pytriton-venv" / "bin" / "python"
PYTRITON_SERVER = Path(__file__).resolve().parent / "pytriton_server.py"

# "(metrics :P)" before hone had gRPC, "(grpc :P, metrics :P)" with it.
HONE_READY = re.compile(
    r"^hone serve: ready: (?P<models>.+) on http://(?P<host>[\d.]+):(?P<port>\d+) "
    r"\((?:grpc :(?P<grpc>\d+), )?metrics :(?P<metrics>\d+)\)$"
)
PYTRITON_READY = "pytriton: ready"
RAY_PYTHON = ROOT / ".cache" / "ray-venv" / "bin" / "python"
RAY_READY = re.compile(r"^hone serve \(ray\): ready: .+ on http://[\d.]+:(?P<port>\d+) \(\d+ replicas?\)$")


class ServerError(RuntimeError):
    """A server did not start, or is not installed."""


@dataclass(frozen=True)
class Running:
    """A started server: where to reach it (``host:port``, as perf_analyzer's -u takes it)."""

    name: str
    process: subprocess.Popen[str]
    http_port: int
    grpc_port: int | None
    metrics_port: int | None
    log: Path

    def url(self, protocol: str) -> str:
        port = self.http_port if protocol == "http" else self.grpc_port
        if port is None:
            raise ServerError(f"{self.name} has no {protocol} endpoint")
        return f"127.0.0.1:{port}"


@contextmanager
def hone_server(model: Path, log: Path, *args: str, start_timeout_s: float = 120) -> Iterator[Running]:
    """``hone serve MODEL ARGS`` on free ports (HTTP, gRPC, metrics)."""
    if not HONE.exists():
        raise ServerError(f"{HONE} is missing: run `make setup`")
    command = [str(HONE), "serve", str(model), *args, "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
    process, line = _start(command, log, lambda text: HONE_READY.match(text) is not None, start_timeout_s)
    match = HONE_READY.match(line)
    assert match is not None
    running = Running(
        "hone",
        process,
        int(match["port"]),
        int(match["grpc"]) if match["grpc"] else None,
        int(match["metrics"]),
        log,
    )
    try:
        yield running
    finally:
        _stop(process)


@contextmanager
def pytriton_server(
    model: Path,
    log: Path,
    *,
    name: str,
    max_batch_size: int = 32,
    max_queue_delay_us: int = 2000,
    instances: int = 1,
    threads: int = 2,
    start_timeout_s: float = 180,
) -> Iterator[Running]:
    """PyTriton's Triton serving ``model`` through onnxruntime (``pytriton_server.py``) on free ports."""
    if not PYTRITON_PYTHON.exists():
        raise ServerError(f"{PYTRITON_PYTHON} is missing: run scripts/setup-pytriton.sh")
    http, grpc, metrics = _free_ports(3)
    command = [
        str(PYTRITON_PYTHON), str(PYTRITON_SERVER), str(model), "--name", name,
        "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
        "--max-batch-size", str(max_batch_size), "--max-queue-delay-us", str(max_queue_delay_us),
        "--instances", str(instances), "--threads", str(threads),
    ]  # fmt: skip
    process, _ = _start(command, log, lambda text: text == PYTRITON_READY, start_timeout_s)
    try:
        yield Running("pytriton", process, http, grpc, metrics, log)
    finally:
        _stop(process)


@contextmanager
def ray_server(
    model: Path,
    log: Path,
    *,
    name: str,
    replicas: int = 1,
    max_batch_size: int = 32,
    max_queue_delay_ms: float = 2.0,
    start_timeout_s: float = 300,
) -> Iterator[Running]:
    """``hone serve --ray`` (Ray Serve, ``hone.serve.ray_serve``) from ``.cache/ray-venv``, HTTP only.

    Ray binds every interface: call this only inside a network namespace that has just loopback.
    """
    if not RAY_PYTHON.exists():
        raise ServerError(f"{RAY_PYTHON} is missing: run `make ray`")
    (http,) = _free_ports(1)
    command = [
        str(RAY_PYTHON), "-m", "hone.serve.ray_serve", str(model), "--name", name,
        "--replicas", str(replicas), "--http-port", str(http),
        "--max-batch-size", str(max_batch_size), "--max-queue-delay-ms", str(max_queue_delay_ms),
    ]  # fmt: skip
    process, _ = _start(command, log, lambda text: RAY_READY.match(text) is not None, start_timeout_s)
    try:
        yield Running("ray", process, http, None, None, log)
    finally:
        _stop(process)


def _start(
    command: list[str], log: Path, is_ready: Callable[[str], bool], timeout_s: float
) -> tuple[subprocess.Popen[str], str]:
    """Start ``command`` with stderr in ``log``; return once a stdout line passes ``is_ready``."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    watchdog = threading.Timer(timeout_s, process.kill)
    watchdog.start()
    try:
        for raw in process.stdout:  # type: ignore[union-attr]
            line = raw.strip()
            if is_ready(line):
                # Keep reading stdout so that the server never blocks on a full pipe.
                threading.Thread(target=process.stdout.read, daemon=True).start()  # type: ignore[union-attr]
                return process, line
    finally:
        watchdog.cancel()
    process.kill()
    process.wait(timeout=10)
    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    raise ServerError(f"{Path(command[0]).name} exited before it was ready ({' | '.join(tail)}); see {log}")


def _stop(process: subprocess.Popen[str], timeout_s: float = 60) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _free_ports(count: int) -> list[int]:
    """Ports free right now (a small race with other programs, acceptable for a benchmark)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            with closing(sock):
                pass
