"""``hone serve --ray``: the same model runner and KServe v2 HTTP routes as a Ray Serve deployment.

Why: ``hone serve`` is one process. Ray Serve runs N replicas of it behind one HTTP proxy (and,
on a Ray cluster, across machines), with Ray's own dynamic batching (``@serve.batch``), request
routing and replica restarts. This module puts hone's pieces inside a Ray Serve deployment
instead of writing them again:

- ``ModelRunner`` (``model_runner.py``) runs the batches, one onnxruntime session per replica with
  ``cores // replicas`` threads, warmed up on every batch size before the replica takes traffic;
- ``protocol`` decodes v2 requests (JSON tensors and the binary extension) and encodes responses;
- ``extensions`` builds the server/model metadata and Triton's model configuration;
- ``config.resolve_models`` turns the model argument (.onnx file or zoo name) into an entry;
- ``batch_rows`` joins a batch's requests and splits its outputs back, as hone's batcher does;
- ``http`` reads bodies (413 above the limit) and answers errors: ``{"error": "..."}`` with the
  error's ``http_status``, exactly as ``hone serve`` does.

Batching is Ray's ``@serve.batch``: ``max_batch_size`` counts samples (``batch_size_fn`` sums the
requests' batch dims, as hone's batcher does) and ``batch_wait_timeout_s`` is
``max_queue_delay_ms``. Requests whose non-batch dims differ run as separate chunks of one batch.

Routes (the Ray proxy routes ``/`` to the replicas)::

    GET  /v2, /v2/health/live, /v2/health/ready
    GET  /v2/models/{m}[/versions/{v}], .../ready, .../config
    POST /v2/models/{m}[/versions/{v}]/infer       JSON tensors or the binary tensor extension

Every infer response carries ``hone-replica: <replica id>`` (a client can see the spread) and
``hone-batch-samples: <n>``, the samples of the batch it ran in (a client can see batching). Not
here: gRPC, the statistics and repository extensions, metrics, priorities and queue timeouts
(the request parameters are accepted and ignored), bearer tokens.

Ray is not a dependency of hone (its protobuf/numpy pins clash with tritonclient's): ``ray`` is
imported inside functions only, and a missing Ray is an ``OptionError`` saying to run ``make ray``.
The command is ``hone serve MODEL --ray --replicas N`` (``hone.cli``); ``serve_on_ray`` is its API.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from hone._version import __version__
from hone.errors import HoneError, InferenceExecutionError, OptionError, ServedModelNotFoundError
from hone.runtime import default_threads
from hone.serve import extensions, protocol
from hone.serve.batch_rows import Outputs, batch_key, concatenate, split_rows
from hone.serve.config import BatchConfig, RepositoryEntry, resolve_models
from hone.serve.http import add_error_handlers, read_body
from hone.serve.model_runner import ModelRunner

logger = logging.getLogger(__name__)

RAY_SERVE_PIN = "ray[serve]==2.60.0"
MISSING_RAY = (
    "hone serve --ray needs Ray Serve: run `make ray` and use .cache/ray-venv/bin/hone (or "
    f"`pip install '{RAY_SERVE_PIN}'` into hone's environment)"
)
REPLICA_HEADER = "hone-replica"
BATCH_HEADER = "hone-batch-samples"  # the samples of the batch the request ran in
# The v2 extensions this deployment implements (statistics and repository stay with `hone serve`).
RAY_EXTENSIONS = ("binary_tensor_data", "model_configuration")
APP_NAME = "hone"
# Serve passes requests between actors inline or through the object store; v2 bodies are small.
OBJECT_STORE_BYTES = 200 * 1024 * 1024
READY_TIMEOUT_S = 300.0
# No per-request access log lines from the proxy and the replicas (they cost CPU on every request).
_SERVE_LOGGING = {"enable_access_log": False}
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


# -- options ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RayServeOptions:
    """What ``hone serve --ray`` was asked for; None batch knobs take ``BatchConfig``'s defaults."""

    model: str
    name: str | None = None
    replicas: int = 1
    host: str = "127.0.0.1"
    http_port: int = 8000
    max_batch_size: int | None = None
    max_queue_delay_ms: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) or self.replicas < 1:
            raise OptionError(f"--replicas must be an integer of at least 1, got {self.replicas!r}")
        if not 1 <= self.http_port <= 65535:
            raise OptionError(
                "--http-port must be from 1 to 65535 with --ray (Ray Serve cannot pick a free "
                f"port), got {self.http_port}"
            )

    def batch_config(self) -> BatchConfig:
        return BatchConfig.from_flags(self.max_batch_size, self.max_queue_delay_ms)

    def entry(self) -> RepositoryEntry:
        """The one model version to serve, its file path absolute (replicas have their own cwd)."""
        entries = resolve_models(self.model, self.name, batch=self.batch_config())
        if len(entries) != 1:
            raise OptionError(
                f"hone serve --ray serves one model; {self.model} holds {len(entries)} model "
                "versions: give one .onnx file (or use `hone serve` for a repository)"
            )
        entry = entries[0]
        path = Path(entry.source)
        if path.is_file():
            return replace(entry, source=str(path.resolve()))
        if importlib.util.find_spec("torch") is None:
            raise OptionError(
                f"zoo model {entry.source!r} needs torch, which this environment lacks; export it "
                f"first (`hone export {entry.source} {entry.source}.onnx`) and serve the .onnx file"
            )
        return entry


@dataclass(frozen=True)
class RayReadyInfo:
    """Where a started Ray Serve deployment listens and what it serves."""

    name: str
    url: str
    replicas: int

    def line(self) -> str:
        replicas = f"{self.replicas} replica{'s' if self.replicas != 1 else ''}"
        return f"hone serve (ray): ready: {self.name} on {self.url} ({replicas})"


def refuse_unsupported(
    *, ray: bool, replicas: int, instances: int = 1, slo_p99_ms: float | None = None, token: str | None = None
) -> None:
    """One-line errors for ``hone serve`` flags that do not combine with ``--ray`` (or need it)."""
    if not ray:
        if replicas != 1:
            raise OptionError("--replicas needs --ray; without Ray use --instances N for parallel sessions")
        return
    unsupported = [
        flag
        for flag, given in (
            ("--instances", instances != 1),
            ("--slo-p99-ms", slo_p99_ms is not None),
            ("--token", token is not None),
        )
        if given
    ]
    if unsupported:
        raise OptionError(
            f"{', '.join(unsupported)} cannot be combined with --ray (it takes --replicas, "
            "--max-batch-size and --max-queue-delay-ms, and serves HTTP only); drop "
            f"{'them' if len(unsupported) > 1 else 'it'} or serve without --ray"
        )


@dataclass(frozen=True)
class ReplicaSpec:
    """What every replica is built from (pickled to each replica)."""

    entry: RepositoryEntry
    threads: int  # onnxruntime intra-op threads of the replica's session
    replicas: int


def replica_threads(cores: int, replicas: int) -> int:
    """Each replica's share of the cores, at least one thread."""
    return max(1, cores // replicas)


# -- the replica -----------------------------------------------------------------------------------


class V2Replica:
    """One Ray Serve replica: a warmed-up ``ModelRunner`` behind Ray's dynamic batching.

    ``hone_deployment`` wraps it with ``serve.ingress()``; Ray then calls
    ``__serve_build_asgi_app__`` on the replica to get its FastAPI app (``create_replica_app``).
    """

    def __init__(self, spec: ReplicaSpec) -> None:
        from ray import serve

        self.spec = spec
        self.entry = spec.entry
        self.runner = ModelRunner(
            self.entry.load(),
            self.entry.name,
            self.entry.version,
            max_batch_size=self.entry.batch.max_batch_size,
            threads=spec.threads,
        )
        self.runner.warm_up()
        self.replica_id = _replica_id(serve)
        self._batched: Callable[[_Pending], Any] | None = None
        if self.runner.batching:
            self._batched = serve.batch(
                max_batch_size=self.entry.batch.max_batch_size,
                batch_wait_timeout_s=self.entry.batch.max_queue_delay_ms / 1000,
                max_concurrent_batches=1,
                batch_size_fn=_samples_in,
            )(self._run_batch)
        logger.info("replica %s of %s ready (%d thread(s))", self.replica_id, self.entry.name, spec.threads)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_replica_app(self)

    async def infer(self, feeds: dict[str, np.ndarray]) -> tuple[Outputs, int]:
        """Validate ``feeds``, run them batched with others (or alone): (outputs, batch samples)."""
        samples = self.runner.validate(feeds)
        if self._batched is None:
            return await asyncio.to_thread(self.runner.run, feeds), samples
        return await self._batched(_Pending(feeds, samples))

    async def _run_batch(self, pending: list[_Pending]) -> list[tuple[Outputs, int]]:
        """@serve.batch's function: concatenate compatible requests, run, split (in a thread)."""
        return await asyncio.to_thread(_run_chunks, self.runner, pending)

    def model_version(self, name: str, version: str | None) -> ModelRunner:
        """The runner, if ``name`` (and ``version``) are the served ones; else a 404."""
        if name != self.entry.name or version not in (None, self.entry.version):
            served = f"{self.entry.name} v{self.entry.version}"
            asked = name if version is None else f"{name} v{version}"
            raise ServedModelNotFoundError(
                f"no served model {asked}; this server serves {served} (GET /v2/models/{self.entry.name})",
                model=name,
            )
        return self.runner


@dataclass(frozen=True)
class _Pending:
    """One request waiting in @serve.batch's queue."""

    feeds: dict[str, np.ndarray]
    samples: int


def _samples_in(pending: list[_Pending]) -> int:
    return sum(item.samples for item in pending)


def _run_chunks(runner: ModelRunner, pending: Sequence[_Pending]) -> list[tuple[Outputs, int]]:
    """Run a batch as chunks of requests that can be concatenated.

    Returns, in request order, each request's outputs and the samples of the chunk it ran in.
    """
    results: dict[int, tuple[Outputs, int]] = {}
    for indices in _chunks(pending):
        samples = [pending[i].samples for i in indices]
        try:
            outputs = runner.run(concatenate([pending[i].feeds for i in indices]))
        except HoneError as exc:
            raise InferenceExecutionError(
                f"the batch of {len(indices)} request(s) this request ran in failed: {exc}",
                model=runner.name,
            ) from exc
        for index, part in zip(indices, split_rows(outputs, samples, runner.name), strict=True):
            results[index] = (part, sum(samples))
    return [results[index] for index in range(len(pending))]


def _chunks(pending: Sequence[_Pending]) -> list[list[int]]:
    """Indices of requests grouped by ``batch_key`` (what can be concatenated), in arrival order."""
    groups: dict[Hashable, list[int]] = {}
    for index, item in enumerate(pending):
        groups.setdefault(batch_key(item.feeds), []).append(index)
    return list(groups.values())


def _replica_id(serve: Any) -> str:
    """This replica's unique id (its process id outside a Serve replica, e.g. in tests)."""
    try:
        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # noqa: BLE001 - not running inside a replica
        return f"pid-{os.getpid()}"


# -- the HTTP app of a replica ---------------------------------------------------------------------


def create_replica_app(replica: V2Replica) -> FastAPI:
    """The v2 routes over one replica; documents from ``extensions``, tensors via ``protocol``."""
    app = FastAPI(title="hone serve (ray)", version=__version__, docs_url=None, redoc_url=None)
    add_error_handlers(app)

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {**extensions.server_metadata(), "extensions": list(RAY_EXTENSIONS)}

    # As hone serve's: 200 with the Open Inference Protocol's body (a replica takes traffic only once warmed
    # up)
    @app.get("/v2/health/live", response_class=JSONResponse)
    async def live() -> JSONResponse:
        return JSONResponse({"live": True})

    @app.get("/v2/health/ready", response_class=JSONResponse)
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": True})

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None) -> dict[str, Any]:
        runner = replica.model_version(name, version)
        return extensions.model_metadata(runner, [replica.entry.version])

    @app.get("/v2/models/{name}/ready", response_class=Response)
    @app.get("/v2/models/{name}/versions/{version}/ready", response_class=Response)
    async def model_ready(name: str, version: str | None = None) -> Response:
        replica.model_version(name, version)
        return Response(status_code=200)

    @app.get("/v2/models/{name}/config")
    @app.get("/v2/models/{name}/versions/{version}/config")
    async def model_config(name: str, version: str | None = None) -> dict[str, Any]:
        runner = replica.model_version(name, version)
        return ray_model_config(extensions.model_config(runner, replica.entry.batch), replica.spec.replicas)

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        runner = replica.model_version(name, version)
        decoded = await _decode(request)
        output_names = [tensor.name for tensor in runner.outputs]
        protocol.check_requested_outputs(decoded, output_names, runner.name)
        outputs, batch_samples = await replica.infer(decoded.inputs)
        encoded = protocol.encode_infer_response(
            model_name=runner.name, model_version=runner.version, outputs=outputs, request=decoded
        )
        headers = {**encoded.headers, REPLICA_HEADER: replica.replica_id, BATCH_HEADER: str(batch_samples)}
        return Response(encoded.body, media_type=encoded.content_type, headers=headers)

    return app


def ray_model_config(config: dict[str, Any], replicas: int) -> dict[str, Any]:
    """hone's model config as served by Ray: one instance per replica, no priorities or queue policy.

    Ray's @serve.batch has neither, so only the batching knobs it honours stay in dynamic_batching.
    """
    for group in config["instance_group"]:
        group["count"] = replicas
    batching = config.get("dynamic_batching")
    if batching is not None:
        kept = ("preferred_batch_size", "max_queue_delay_microseconds", "preserve_ordering")
        config["dynamic_batching"] = {key: batching[key] for key in kept if key in batching}
    return config


async def _decode(request: Request) -> protocol.InferRequest:
    """The request's tensors and options; a body above the limit is refused (413) before it is read."""
    max_bytes = protocol.DEFAULT_MAX_BODY_BYTES
    body = await read_body(request, max_bytes)
    body = protocol.decompress(body, request.headers.get("content-encoding"), max_bytes)
    header_length = protocol.parse_header_length(request.headers.get(protocol.HEADER_LENGTH), len(body))
    return protocol.decode_infer_request(body, header_length)


# -- starting and stopping Ray Serve ---------------------------------------------------------------


def import_ray_serve() -> tuple[Any, Any]:
    """``(ray, ray.serve)``, or an OptionError saying how to get them."""
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise OptionError(MISSING_RAY) from exc
    return ray, serve


def hone_deployment(spec: ReplicaSpec, serve: Any) -> Any:
    """The bound Serve application: ``spec.replicas`` replicas of ``V2Replica`` with its v2 app."""
    batch = spec.entry.batch
    deployment = serve.deployment(
        name=f"hone-{spec.entry.name}",
        num_replicas=spec.replicas,
        # Enough requests in flight per replica to fill a batch while the previous one runs.
        max_ongoing_requests=max(8, 2 * batch.max_batch_size),
        ray_actor_options={"num_cpus": 0},  # the replicas share the cores through `threads`
        logging_config=_SERVE_LOGGING,
    )(serve.ingress()(V2Replica))
    return deployment.bind(spec)


def serve_on_ray(options: RayServeOptions, *, on_ready: Callable[[RayReadyInfo], None]) -> None:
    """Serve ``options.model`` with Ray Serve replicas on a local Ray until SIGTERM/SIGINT.

    ``on_ready`` is called once every replica is up and /v2/health/ready answers 200.
    """
    host, http_port, replicas = options.host, options.http_port, options.replicas
    entry = options.entry()  # a bad path or knob fails before Ray starts,
    entry.load()  # and so does a file onnxruntime's loader refuses (InvalidModelError)
    ray, serve = import_ray_serve()
    _check_port_free(host, http_port)  # Ray's proxy would only log the failure, later
    cores = default_threads()
    spec = ReplicaSpec(entry, replica_threads(cores, replicas), replicas)
    _start_ray(ray, serve, cores=os.cpu_count() or cores, host=host, http_port=http_port)
    stop = _stop_event()  # after ray.init, whose core worker installs its own SIGTERM handler
    try:
        _run_deployment(serve, spec)
        url = f"http://{_connect_host(host)}:{http_port}"
        _wait_ready(url, READY_TIMEOUT_S, stop)
        if not stop.is_set():
            on_ready(RayReadyInfo(entry.name, f"http://{host}:{http_port}", replicas))
            stop.wait()
        logger.info("stop signal: shutting Ray Serve down")
    finally:
        _shutdown(ray, serve)


def _run_deployment(serve: Any, spec: ReplicaSpec) -> None:
    """Deploy and wait until every replica is up; a replica that fails to start is an OptionError."""
    try:
        serve.run(hone_deployment(spec, serve), name=APP_NAME, route_prefix="/")
    except HoneError:
        raise
    except Exception as exc:  # Ray's DeploymentFailed / RayActorError, with the replica's traceback
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OptionError(
            f"Ray Serve could not start the replicas of {spec.entry.name} ({first_line}); see the "
            "replica logs under /tmp/ray/session_latest/logs/serve"
        ) from exc


def _start_ray(ray: Any, serve: Any, *, cores: int, host: str, http_port: int) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray runs its workers at nice 15; here they are the server, not background tasks.
    os.environ.setdefault("RAY_worker_niceness", "0")
    node_ip = "127.0.0.1" if _connect_host(host) == "127.0.0.1" else None
    ray.init(
        num_cpus=cores,
        include_dashboard=False,
        object_store_memory=OBJECT_STORE_BYTES,
        _node_ip_address=node_ip,
        namespace=APP_NAME,
        configure_logging=True,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    try:
        serve.start(http_options={"host": host, "port": http_port}, logging_config=_SERVE_LOGGING)
    except Exception as exc:
        ray.shutdown()
        raise OptionError(
            f"Ray Serve could not listen on {host}:{http_port} ({exc}); pick another --http-port "
            "or stop what holds it"
        ) from exc


def _check_port_free(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OptionError(f"--host {host!r} does not resolve ({exc.strerror}); use an IP address") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise OptionError(
                f"cannot listen on {host}:{port} ({exc.strerror}); pick another --http-port or stop "
                "what holds it"
            ) from exc


def _shutdown(ray: Any, serve: Any) -> None:
    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def _stop_event() -> threading.Event:
    """An event set by SIGTERM or SIGINT (handlers installed now, in the main thread)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        if stop.is_set():
            logger.warning("already stopping Ray Serve; send SIGKILL to stop at once")
        stop.set()

    for signum in _STOP_SIGNALS:
        signal.signal(signum, on_signal)
    return stop


def _wait_ready(url: str, timeout_s: float, stop: threading.Event) -> None:
    """Poll GET /v2/health/ready until 200 (the proxy may learn the route after serve.run)."""
    deadline = time.monotonic() + timeout_s
    while not stop.is_set():
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise OptionError(
                f"Ray Serve did not answer {url}/v2/health/ready within {timeout_s:.0f} s; see "
                "the Ray logs under /tmp/ray/session_latest/logs"
            )
        stop.wait(0.2)


def _connect_host(host: str) -> str:
    """Where a local client reaches a server bound to ``host`` (a wildcard means loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "localhost") else host
