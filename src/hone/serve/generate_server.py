"""Start and stop ``hone serve`` for a generative model: load the decoder, start the engine thread,
bind the HTTP port, say ready; on SIGTERM/SIGINT refuse new requests (503), finish the accepted
sequences, then close."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import uvicorn

from hone.errors import OptionError
from hone.generate.decoder import Decoder
from hone.generate.engine import Engine, EngineConfig
from hone.model import Model
from hone.serve.generate_http import GenerationService, create_generate_app
from hone.serve.generate_metrics import GenerationMetrics
from hone.serve.limits import ConnectionLimits, bounded_protocol

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerateServeOptions:
    model: Model
    name: str
    engine: EngineConfig
    host: str = "127.0.0.1"
    http_port: int = 8000
    threads: int | None = None
    token: str | None = None  # bearer token required on every route but health
    limits: ConnectionLimits = ConnectionLimits()  # request line and headers (431/414 beyond)
    max_body_bytes: int = 4 * 1024 * 1024  # a request's JSON body (413 beyond)
    body_timeout_s: float = 60.0  # for the body to arrive after its head (408 beyond)
    keep_alive_s: float = 5.0
    max_connections: int = 1024  # HTTP connections and requests in progress (503 beyond)


@dataclass(frozen=True)
class GenerateReady:
    name: str
    host: str
    http_port: int
    config: EngineConfig
    kv_cache: str = ""  # which cache serves, and why when it is not the in-place one

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def line(self) -> str:
        c = self.config
        return (
            f"hone serve: ready: {self.name} (generate, {c.policy} batching, {c.max_sequences} sequences, "
            f"{c.max_cached_tokens} cached tokens, {self.kv_cache or 'padded'} KV cache) on {self.url} "
            f"(OpenAI at {self.url}/v1, metrics at {self.url}/metrics)"
        )


def build_service(model: Model, name: str, config: EngineConfig, threads: int | None) -> GenerationService:
    decoder = Decoder(model, threads=threads)
    metrics = GenerationMetrics(name)
    engine = Engine(decoder, config, observer=metrics)
    metrics.attach(engine.stats, config.max_cached_tokens)
    return GenerationService(name, decoder, engine, metrics)


def serve_generative(options: GenerateServeOptions, *, on_ready: Callable[[GenerateReady], None]) -> None:
    """Run until SIGTERM/SIGINT, then drain and return (blocking)."""
    service = build_service(options.model, options.name, options.engine, options.threads)
    try:
        with _listening(options.host, options.http_port) as sock:
            asyncio.run(_serve(service, sock, options, on_ready))
    finally:
        service.engine.close(drain=False)


async def _serve(
    service: GenerationService,
    sock: socket.socket,
    options: GenerateServeOptions,
    on_ready: Callable[[GenerateReady], None],
) -> None:
    app = create_generate_app(
        service, options.token, max_body_bytes=options.max_body_bytes, body_timeout_s=options.body_timeout_s
    )
    config = uvicorn.Config(
        app,
        # the C HTTP parser with head limits and deadline, as the KServe server has
        http=bounded_protocol(options.limits),
        timeout_keep_alive=options.keep_alive_s,  # type: ignore[arg-type]  # any seconds
        limit_concurrency=options.max_connections,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
    )
    server = _Server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            return
        await asyncio.sleep(0.01)
    port = sock.getsockname()[1]
    on_ready(GenerateReady(options.name, options.host, port, service.engine.config, service.engine.kv_cache))
    await stop.wait()
    logger.info("stop signal: refusing new requests, finishing the running sequences")
    service.ready = False
    await asyncio.to_thread(service.engine.close, drain=True)
    server.should_exit = True
    await task


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def _listening(host: str, port: int) -> Iterator[socket.socket]:
    try:
        sock = socket.create_server((host, port), reuse_port=False, backlog=2048)
        # Accepted connections inherit it (Linux): each token's event leaves at once. Without it,
        # Nagle held the first event until the client's delayed ACK: a 40 ms TTFT at one client.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        raise OptionError(
            f"cannot listen on {host}:{port} ({exc.strerror}); pick another --http-port (0: any free port)"
        ) from exc
    try:
        yield sock
    finally:
        sock.close()


__all__ = ["GenerateReady", "GenerateServeOptions", "build_service", "serve_generative"]
