"""Start and stop ``hone serve``: ports, models, readiness, and the SIGTERM drain.

The order, so that every state is observable from outside:

1. what to serve is resolved (a bad path fails here, before any port is taken); with
   ``--slo-p99-ms`` each model's batching is planned and checked here (``hone.serve.slo``) and
   ``on_plan`` is called with each plan;
2. the HTTP, gRPC and metrics ports are bound (port 0 picks a free one; a taken port fails here)
   and the servers start: /v2/health/live answers 200, /v2/health/ready 503 (gRPC ServerReady
   false);
3. every model is loaded, its sessions built and every batch size warmed up;
4. ``on_ready`` is called (the CLI prints its one line) and readiness turns 200 in the same step;
5. on SIGTERM or SIGINT new requests get 503 (gRPC UNAVAILABLE) and readiness turns 503, every
   accepted request is answered, then the servers close and ``serve`` returns.

A failure in 1-3 raises a HoneError (the CLI prints one line and exits 2) after closing the ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import grpc
import uvicorn
import uvloop

from hone.errors import OptionError
from hone.serve import grpc_api, slo
from hone.serve.budget import DEFAULT_MAX_INFLIGHT_BYTES, ByteBudget
from hone.serve.config import BatchConfig, RepositoryEntry, resolve_models
from hone.serve.http import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_JSON_BYTES,
    BearerTokenMiddleware,
    create_app,
)
from hone.serve.limits import ConnectionLimits, bounded_protocol
from hone.serve.metrics import ServeMetrics
from hone.serve.registry import ModelControlMode, ModelRegistry, parse_model_control
from hone.serve.slo import SloPlan

logger = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_KEEP_ALIVE_S = 5.0
# After every accepted request is answered, how long gRPC calls get to finish sending their answer.
_GRPC_GRACE_S = 5.0


@dataclass(frozen=True)
class ServeOptions:
    """What ``hone serve`` was asked for; None batch knobs take ``BatchConfig``'s defaults."""

    model: str
    name: str | None = None
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch_size: int | None = None
    max_queue_delay_ms: float | None = None
    instances: int = 1
    token: str | None = None
    model_control: ModelControlMode = "none"  # whether repository load/unload are allowed
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES  # bytes of all requests held at once; 503 beyond
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S  # an infer body must arrive within this; 408 otherwise
    max_json_bytes: int = (
        DEFAULT_MAX_JSON_BYTES  # an infer request's JSON part; 413 beyond (use binary tensors)
    )
    max_header_bytes: int = ConnectionLimits.max_header_bytes
    max_url_bytes: int = ConnectionLimits.max_url_bytes
    header_timeout_s: float = ConnectionLimits.header_timeout_s
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # HTTP connections and requests in progress; 503 beyond
    keep_alive_s: float = DEFAULT_KEEP_ALIVE_S  # an idle keep-alive connection is closed after this
    slo_p99_ms: float | None = None
    dims: dict[str, int] = field(default_factory=dict)  # --dim values
    data: str | None = None  # --data: samples for the warm-up and the SLO probe

    def __post_init__(self) -> None:
        parse_model_control(self.model_control, "--model-control-mode")  # a string from anywhere: checked
        positive = {
            "--max-header-bytes": self.max_header_bytes,
            "--max-url-bytes": self.max_url_bytes,
            "--header-timeout-s": self.header_timeout_s,
            "--max-connections": self.max_connections,
            "--keep-alive-s": self.keep_alive_s,
            "--max-body-bytes": self.max_body_bytes,
            "--max-inflight-bytes": self.max_inflight_bytes,
            "--body-timeout-s": self.body_timeout_s,
            "--max-json-bytes": self.max_json_bytes,
        }
        for flag, value in positive.items():
            if not value > 0:
                raise OptionError(f"{flag} must be positive, got {value:g}")
        ports = {
            "--http-port": self.http_port,
            "--grpc-port": self.grpc_port,
            "--metrics-port": self.metrics_port,
        }
        for flag, port in ports.items():
            if not 0 <= port <= 65535:
                raise OptionError(f"{flag} must be from 0 (any free port) to 65535, got {port}")
        for flag, port in ports.items():
            same = [other for other, value in ports.items() if other != flag and port and value == port]
            if same:
                raise OptionError(f"{flag} and {same[0]} are both {port}; give them different ports")
        self._check_slo()

    def _check_slo(self) -> None:
        if self.slo_p99_ms is None:
            return
        if not self.slo_p99_ms > 0:
            raise OptionError(
                f"--slo-p99-ms must be a positive number of milliseconds, got {self.slo_p99_ms}"
            )
        if self.max_batch_size is not None or self.max_queue_delay_ms is not None:
            raise OptionError(
                "--slo-p99-ms chooses --max-batch-size and --max-queue-delay-ms itself; give the target "
                "or the knobs, not both"
            )

    def batch_config(self) -> BatchConfig:
        return BatchConfig.from_flags(self.max_batch_size, self.max_queue_delay_ms)

    def resolve(self) -> list[RepositoryEntry]:
        return resolve_models(
            self.model,
            self.name,
            batch=self.batch_config(),
            instances=self.instances,
            data=self.data,
            dims=self.dims,
        )


@dataclass(frozen=True)
class ReadyInfo:
    """Where a started server listens and what it serves."""

    models: tuple[tuple[str, str], ...]  # (name, version)
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def line(self) -> str:
        served = ", ".join(f"{name} v{version}" for name, version in self.models)
        return (
            f"hone serve: ready: {served} on {self.url} (grpc :{self.grpc_port}, "
            f"metrics :{self.metrics_port})"
        )


def serve(
    options: ServeOptions,
    *,
    on_ready: Callable[[ReadyInfo], None],
    on_plan: Callable[[SloPlan], None] | None = None,
) -> None:
    """Run the server until SIGTERM/SIGINT, then drain and return (blocking)."""
    entries = options.resolve()  # fail on a bad path or knob before taking any port
    plans: dict[tuple[str, str], SloPlan] = {}
    if options.slo_p99_ms is not None:
        for entry in entries:
            plans[(entry.name, entry.version)] = plan = slo.plan(entry, options.slo_p99_ms)
            if on_plan is not None:
                on_plan(plan)

    def resolve() -> list[RepositoryEntry]:
        """The entries, with the batching SLO mode chose for the versions it planned."""
        return [
            (
                replace(entry, batch=plans[(entry.name, entry.version)].batch_config(entry.batch))
                if (entry.name, entry.version) in plans
                else entry
            )
            for entry in options.resolve()
        ]

    # uvloop: libuv's event loop, less CPU per request than asyncio's (grpc.aio runs on it too).
    uvloop.run(_serve(options, resolve, on_ready))


async def _serve(
    options: ServeOptions,
    resolve: Callable[[], list[RepositoryEntry]],
    on_ready: Callable[[ReadyInfo], None],
) -> None:
    metrics = ServeMetrics()
    registry = ModelRegistry(resolve, metrics=metrics, model_control=options.model_control)
    budget = ByteBudget(options.max_inflight_bytes)  # one for HTTP and gRPC together
    app = create_app(
        registry,
        token=options.token,
        max_body_bytes=options.max_body_bytes,
        budget=budget,
        body_timeout_s=options.body_timeout_s,
        max_json_bytes=options.max_json_bytes,
    )
    metrics_app = metrics.asgi_app()
    if (
        options.token
    ):  # the token guards the metrics port too (Prometheus sends it: authorization in scrape_config)
        metrics_app = BearerTokenMiddleware(metrics_app, token=options.token)
    with (
        _listening(options.host, options.http_port, "--http-port") as http_socket,
        _listening(options.host, options.metrics_port, "--metrics-port") as metrics_socket,
    ):
        grpc_server = grpc_api.create_server(
            registry, token=options.token, max_message_bytes=options.max_body_bytes, budget=budget
        )
        grpc_port = _add_grpc_port(grpc_server, options.host, options.grpc_port)
        await grpc_server.start()
        limits = ConnectionLimits(options.max_header_bytes, options.max_url_bytes, options.header_timeout_s)
        servers = [_quiet_server(app, options, limits), _quiet_server(metrics_app, options, limits)]
        tasks = [
            asyncio.create_task(server.serve(sockets=[sock]), name=f"hone-serve-{kind}")
            for server, sock, kind in zip(
                servers, (http_socket, metrics_socket), ("http", "metrics"), strict=False
            )
        ]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in _STOP_SIGNALS:
            loop.add_signal_handler(signum, _on_signal, stop, registry)
        try:
            await _started(servers, tasks)
            if await _load_unless_stopped(registry, stop):
                # What is loaded now lives as long as the server: keep it out of the collector's
                # full passes, whose pauses otherwise show up in the latency tail.
                gc.collect()
                gc.freeze()
                on_ready(
                    ReadyInfo(
                        models=tuple((m.name, m.version) for m in registry.served()),
                        host=options.host,
                        http_port=http_socket.getsockname()[1],
                        grpc_port=grpc_port,
                        metrics_port=metrics_socket.getsockname()[1],
                    )
                )
                await stop.wait()
        finally:
            await registry.stop()  # new requests get 503; every accepted one is answered
            await grpc_server.stop(grace=_GRPC_GRACE_S)  # lets answered calls finish sending
            for server in servers:
                server.should_exit = True
            await asyncio.gather(*tasks, return_exceptions=True)
            for signum in _STOP_SIGNALS:
                loop.remove_signal_handler(signum)
    logger.info("hone serve stopped")


def _on_signal(stop: asyncio.Event, registry: ModelRegistry) -> None:
    if stop.is_set():
        logger.warning("already draining the accepted requests; send SIGKILL to stop at once")
        return
    logger.info("stop signal: refusing new requests, answering the accepted ones")
    registry.begin_shutdown()
    stop.set()


async def _started(servers: list[_Server], tasks: list[asyncio.Task[None]]) -> None:
    """Wait until both servers accept connections; raise if one failed to start."""
    while not all(server.started for server in servers):
        failed = [task for task in tasks if task.done()]
        if failed:
            failed[0].result()  # its exception, if any
            raise OptionError("the HTTP server stopped while starting; see the log above")
        await asyncio.sleep(0.01)


async def _load_unless_stopped(registry: ModelRegistry, stop: asyncio.Event) -> bool:
    """Load every model; False if a stop signal came first. A load error is raised."""
    loading = asyncio.create_task(registry.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait((loading, stopping), return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if loading.done():
        loading.result()  # raises the load error
        return True
    loading.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await loading
    return False


@contextlib.contextmanager
def _listening(host: str, port: int, flag: str) -> Iterator[socket.socket]:
    """A bound, listening TCP socket (port 0: a free one), closed on exit."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OptionError(f"--host {host!r} does not resolve ({exc.strerror}); use an IP address") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise OptionError(
            f"cannot listen on {host}:{port} ({exc.strerror}); pick another {flag} (0: any free "
            "port) or stop what holds it"
        ) from exc
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def _add_grpc_port(server: grpc.aio.Server, host: str, port: int) -> int:
    """Bind the gRPC server (port 0: a free one) and return its port; a taken port fails here."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OptionError(
            f"cannot listen on {address} for gRPC ({exc}); pick another --grpc-port (0: any free "
            "port) or stop what holds it"
        ) from exc
    if not bound:
        raise OptionError(
            f"cannot listen on {address} for gRPC; pick another --grpc-port or stop what holds it"
        )
    return bound


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: ``_serve`` decides the order of shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _quiet_server(app: object, options: ServeOptions, limits: ConnectionLimits) -> _Server:
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        # the C HTTP parser (h11 is pure Python), less CPU per request, with head limits and deadline
        http=bounded_protocol(limits),
        limit_concurrency=options.max_connections,
        # uvicorn annotates it int, but takes any seconds (it goes to loop.call_later)
        timeout_keep_alive=options.keep_alive_s,  # type: ignore[arg-type]
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
    )
    return _Server(config)
