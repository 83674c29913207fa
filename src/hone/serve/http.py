"""The KServe v2 HTTP routes of ``hone serve`` (FastAPI), with Triton's extensions.

Thin handlers: the registry finds the model, ``protocol`` decodes and encodes tensors,
``extensions`` builds the metadata, config, statistics and index documents, the batcher runs.

    GET  /v2                                          server metadata (name, version, extensions)
    GET  /v2/health/live, /v2/health/ready            200, or 503 until every model is warmed up
    GET  /v2/models/stats                             statistics of every served model
    GET  /v2/models/{m}[/versions/{v}]                model metadata
    GET  /v2/models/{m}[/versions/{v}]/ready          200, 503 (not ready) or 404 (unknown)
    GET  /v2/models/{m}[/versions/{v}]/config         Triton's model configuration
    GET  /v2/models/{m}[/versions/{v}]/stats          Triton's statistics
    POST /v2/models/{m}[/versions/{v}]/infer          inference: JSON tensors or binary extension
    POST /v2/repository/index                         every model version and its state
    POST /v2/repository/models/{m}/load, /unload      (re)load from the repository, or unload

Errors are ``{"error": "..."}`` with the status the error carries (``ServingError.http_status``):
400 for a malformed request, 404 for an unknown model, version or route, 413 for a body above
``max_body_bytes`` (refused from Content-Length before it is read), 503 when the queue is full, a
queue timeout expired, the model is not ready or the server is shutting down. With ``token``, every
route but health needs ``Authorization: Bearer <token>`` (else 401).

A client that disconnects while its request waits has the request withdrawn from the queue.

The infer route is the hot path, so it does not go through FastAPI: ``InferRoute``, a raw ASGI
layer in front of the app, takes ``POST .../infer`` and answers it directly (FastAPI's routing,
parameter solving and response machinery cost about as much as the rest of a request together).
Every other route is FastAPI's. The OpenAPI document still describes the infer routes
(``_openapi``), for clients and for fuzzing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import re
from collections.abc import Awaitable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from hone._version import __version__
from hone.errors import (
    BodyTimeoutError,
    HoneError,
    InferenceInputError,
    RequestTooLargeError,
    ServingError,
)
from hone.serve import extensions, protocol
from hone.serve.budget import DECODE_ON_LOOP_BYTES, DECODE_THREADS, JSON_PARSE_FACTOR, ByteBudget, Reservation
from hone.serve.datatypes import KSERVE_DATATYPES
from hone.serve.registry import ModelRegistry

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = protocol.DEFAULT_MAX_BODY_BYTES
# An infer body must arrive within this many seconds of its head (64 MB at 2 MB/s takes 32 s).
DEFAULT_BODY_TIMEOUT_S = 60.0
# The JSON part of an infer request (after inflating): Python's json parser holds the GIL for the
# whole parse, during which the event loop answers nobody, and the cost grows with the number of
# values, not bytes: 16 MiB of one-digit values (8.4 million) took 1.26 s to decode, 0.45 s of it
# in one json.loads (benchmarks/serve_abuse.py). 4 MiB bounds that near 0.3 s; a float32
# 224x224x3 image in JSON (about 2 MB) fits; larger tensors go as binary (tritonclient's default).
DEFAULT_MAX_JSON_BYTES = 4 * 1024 * 1024
# The infer handlers read the raw body (JSON, or JSON then binary tensors), so FastAPI cannot infer
# its schema: this describes the JSON form for the OpenAPI document (and for fuzzing) only.
_TENSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        # at most 64 dims, each within int64 (protocol.element_count; beyond: 400)
        "shape": {
            "type": "array",
            "maxItems": protocol.MAX_RANK,
            "items": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
        },
        "datatype": {
            "type": "string",
            "enum": list(KSERVE_DATATYPES),
        },
        "data": {"type": "array"},
        "parameters": {"type": "object"},
    },
}
INFER_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "items": _TENSOR_SCHEMA},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                            },
                        },
                    },
                }
            }
        },
    }
}
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
INFER_PATHS = ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")
_INFER_PATH = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer$")
HEALTH_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
# nginx's code for "client closed the request": never sent (the client is gone), only logged.
CLIENT_CLOSED_REQUEST = 499


def create_app(
    models: ModelRegistry,
    *,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    budget: ByteBudget | None = None,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES,
) -> FastAPI:
    """The v2 HTTP app over ``models``; ``token`` guards every route but health; ``budget`` bounds the
    bytes of the infer requests held at once (shared with gRPC); an infer body must arrive within
    ``body_timeout_s``; its JSON part may be at most ``max_json_bytes`` (413 beyond)."""
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be at least 1, got {max_body_bytes}")
    app = FastAPI(title="hone serve", version=__version__, docs_url=None, redoc_url=None)
    add_error_handlers(app)

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return extensions.server_metadata()

    # Health: the status says it (Triton, tritonclient); the body says it too, as the Open Inference
    # Protocol's {"live": true} / {"ready": true}, which kserve's InferenceRESTClient parses.
    @app.get("/v2/health/live", response_class=JSONResponse)
    async def live() -> JSONResponse:
        return JSONResponse({"live": True})

    @app.get("/v2/health/ready", response_class=JSONResponse)
    async def ready() -> JSONResponse:
        if models.ready:
            return JSONResponse({"ready": True})
        reason = "shutting down" if not models.accepting else "models are loading or not ready"
        return _error(503, f"not ready: {reason}")

    @app.get("/v2/models/stats")
    async def all_statistics() -> dict[str, Any]:
        return extensions.statistics_document(models.statistics_targets())

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None) -> dict[str, Any]:
        served = models.get(name, version)
        return extensions.model_metadata(served.runner, models.versions(name))

    @app.get("/v2/models/{name}/ready", response_class=Response)
    @app.get("/v2/models/{name}/versions/{version}/ready", response_class=Response)
    async def model_ready(name: str, version: str | None = None) -> Response:
        models.get(name, version)  # 404 unknown, 503 not ready
        return Response(status_code=200)

    @app.get("/v2/models/{name}/config")
    @app.get("/v2/models/{name}/versions/{version}/config")
    async def model_config(name: str, version: str | None = None) -> dict[str, Any]:
        served = models.get(name, version)
        return extensions.model_config(served.runner, served.entry.batch)

    @app.get("/v2/models/{name}/stats")
    @app.get("/v2/models/{name}/versions/{version}/stats")
    async def model_statistics(name: str, version: str | None = None) -> dict[str, Any]:
        return extensions.statistics_document(models.statistics_targets(name, version))

    @app.post("/v2/repository/index")
    async def repository_index(request: Request) -> list[dict[str, Any]]:
        options = await _json_options(request)
        ready_only = options.get("ready", False)
        if not isinstance(ready_only, bool):
            raise InferenceInputError(f"'ready' must be true or false, got {ready_only!r}")
        return [
            extensions.index_entry(entry.name, entry.version, entry.state, entry.reason)
            for entry in models.index()
            if not ready_only or entry.state == "READY"
        ]

    @app.post("/v2/repository/models/{name}/load")
    async def repository_load(request: Request, name: str) -> Response:
        options = await _json_options(request)
        parameters = options.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InferenceInputError("'parameters' must be a JSON object")
        extensions.refuse_load_overrides(parameters)
        await models.load(name)
        return Response(status_code=200)

    @app.post("/v2/repository/models/{name}/unload")
    async def repository_unload(request: Request, name: str) -> Response:
        await _json_options(request)
        await models.unload(name)
        return Response(status_code=200)

    app.add_middleware(
        InferRoute,
        models=models,
        max_body_bytes=max_body_bytes,
        budget=budget or ByteBudget(),
        body_timeout_s=body_timeout_s,
        max_json_bytes=max_json_bytes,
    )
    if token:
        app.add_middleware(BearerTokenMiddleware, token=token)  # added last: it runs first
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


class InferRoute:
    """``POST /v2/models/{m}[/versions/{v}]/infer`` answered here; every other request goes on to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        models: ModelRegistry,
        max_body_bytes: int,
        budget: ByteBudget,
        body_timeout_s: float,
        max_json_bytes: int,
    ) -> None:
        self.app = app
        self.models = models
        self.max_body_bytes = max_body_bytes
        self.max_json_bytes = max_json_bytes
        self.budget = budget
        self.body_timeout_s = body_timeout_s
        self._decoders = asyncio.Semaphore(DECODE_THREADS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _INFER_PATH.match(scope["path"]) if scope["type"] == "http" else None
        if match is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        with self.budget.hold() as held:  # the request's bytes, until its answer is written
            try:
                response = await self.infer(request, match["name"], match["version"], held)
            except Exception as exc:  # noqa: BLE001 - every failure is one answer; the server goes on
                response = error_response(request, exc)
            await response(scope, receive, send)

    async def infer(self, request: Request, name: str, version: str | None, held: Reservation) -> Response:
        self.models.check_accepting()
        served = self.models.get(name, version)
        body = await read_body(request, self.max_body_bytes, held, self.body_timeout_s)
        encoding = request.headers.get("content-encoding")
        header = request.headers.get(protocol.HEADER_LENGTH)
        if len(body) <= DECODE_ON_LOOP_BYTES and encoding is None:
            decoded = _decode(body, encoding, header, self.max_body_bytes, held, self.max_json_bytes)
        else:  # large or compressed: off the event loop, a bounded number at a time
            async with self._decoders:
                decoded = await asyncio.to_thread(
                    _decode, body, encoding, header, self.max_body_bytes, held, self.max_json_bytes
                )
        held.grow(sum(array.nbytes for array in decoded.inputs.values()), "its input tensors")
        protocol.check_requested_outputs(decoded, served.output_names, served.name)
        submission = served.batcher.submit(
            decoded.inputs,
            priority=served.priority_level(decoded.priority),
            timeout_ms=decoded.timeout_ms,
        )
        outputs = await _unless_disconnected(request, submission)
        if outputs is None:
            logger.debug("%s: client went away; its request was withdrawn", served.name)
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        held.grow(sum(array.nbytes for array in outputs.values()), "its answer")
        encode = functools.partial(
            protocol.encode_infer_response,
            model_name=served.name,
            model_version=served.version,
            outputs=outputs,
            request=decoded,
        )
        if sum(array.nbytes for array in outputs.values()) <= DECODE_ON_LOOP_BYTES:
            encoded = encode()
        else:  # a large answer (JSON of millions of floats takes seconds) is encoded off the loop too
            async with self._decoders:
                encoded = await asyncio.to_thread(encode)
        return Response(encoded.body, media_type=encoded.content_type, headers=encoded.headers)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document for its routes, plus the infer routes that ``InferRoute`` answers."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for path in INFER_PATHS:
            names = re.findall(r"{(\w+)}", path)
            document["paths"][path] = {
                "post": {
                    "summary": "Infer",
                    "operationId": "infer_version" if "version" in names else "infer",
                    "parameters": [
                        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                        for name in names
                    ],
                    **INFER_OPENAPI,
                    "responses": {
                        "200": {
                            "description": "the outputs (JSON, or JSON then binary tensors)",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **{
                            str(status): {
                                "description": why,
                                "content": {"application/json": {"schema": _ERROR_SCHEMA}},
                            }
                            for status, why in _INFER_ERRORS.items()
                        },
                    },
                }
            }
        app.openapi_schema = document
    return app.openapi_schema


_INFER_ERRORS = {
    400: "malformed request",
    401: "missing or wrong bearer token",
    403: "repository load/unload without --model-control-mode explicit",
    404: "unknown model or version",
    408: "the body did not arrive within --body-timeout-s",
    413: "body above the server's limit",
    503: "queue full, requests over --max-inflight-bytes, queue timeout, model not ready or shutting down",
}


def _decode(
    body: bytes,
    encoding: str | None,
    header: str | None,
    max_body_bytes: int,
    held: Reservation,
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES,
) -> protocol.InferRequest:
    """Inflate and decode; the inflated body and the JSON parser's working memory are held on the
    budget (the parser's only while it runs)."""
    if encoding is not None:
        # all JSON (no binary part): inflating past the JSON limit is refused as soon as it is passed
        cap = max_body_bytes if header is not None else min(max_body_bytes, max_json_bytes)
        body = protocol.decompress(body, encoding, cap)
        held.grow(len(body), "its inflated body")
    header_length = protocol.parse_header_length(header, len(body))
    json_bytes = len(body) if header_length is None else header_length
    if json_bytes > max_json_bytes:
        raise RequestTooLargeError(
            f"the request's JSON is {json_bytes} bytes, above the server's limit of {max_json_bytes} for JSON"
            " (Python's parser holds the interpreter while it reads); send large tensors in the binary"
            " tensor extension (Inference-Header-Content-Length), or start the server with a higher"
            " --max-json-bytes"
        )
    parsing = JSON_PARSE_FACTOR * json_bytes
    held.grow(parsing, "parsing its JSON")
    try:
        return protocol.decode_infer_request(body, header_length, max_elements=max_body_bytes)
    finally:
        held.shrink(parsing)


class BearerTokenMiddleware:
    """Refuse (401) every request but health without ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in HEALTH_PATHS:
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(given, self._expected):
            await self.app(scope, receive, send)
            return
        response = _error(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'")
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)


# -- helpers ---------------------------------------------------------------------------------------


async def read_body(
    request: Request, max_bytes: int, held: Reservation | None = None, timeout_s: float | None = None
) -> bytes:
    """The body, refused with 413 from Content-Length before reading, or as soon as it passes the
    limit; each chunk is held on the budget as it arrives (503 beyond it), and the whole body must
    arrive within ``timeout_s`` (408 otherwise, and the connection is closed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise RequestTooLargeError(_too_large(int(declared), max_bytes))
    chunks: list[bytes] = []
    size = 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise RequestTooLargeError(_too_large(size, max_bytes, at_least=True))
            if held is not None:
                held.grow(len(chunk), "its body")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), timeout_s)
    except TimeoutError:
        raise BodyTimeoutError(
            f"the request body did not arrive within {timeout_s:g} s ({size} bytes came); send it at once, "
            "or start the server with a longer --body-timeout-s"
        ) from None
    return b"".join(chunks)


def _too_large(size: int, max_bytes: int, *, at_least: bool = False) -> str:
    return (
        f"the request body is {'over ' if at_least else ''}{size} bytes, above the server's limit of "
        f"{max_bytes} bytes; send fewer samples per request (or start the server with a higher limit)"
    )


# A repository request's body is a small JSON object of options: no reason to read megabytes on the loop.
_MAX_OPTIONS_BYTES = 64 * 1024


async def _json_options(request: Request) -> dict[str, Any]:
    """The optional JSON object body of a repository request ({} when empty)."""
    body = await read_body(request, _MAX_OPTIONS_BYTES)
    if not body.strip():
        return {}
    try:
        options = json.loads(body)
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, too deep, an integer too long
        raise InferenceInputError(f"the request body is not valid JSON ({exc})") from exc
    if not isinstance(options, dict):
        raise InferenceInputError("the request body must be a JSON object")
    return options


async def _unless_disconnected(request: Request, submission: Awaitable[Any]) -> Any | None:
    """The submission's result, or None (the request withdrawn) if the client disconnects first."""
    answer = asyncio.ensure_future(submission)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((answer, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not answer.done():
            answer.cancel()  # the batcher takes a cancelled request out of its queue
    if answer.done() and not answer.cancelled():
        return answer.result()
    with contextlib.suppress(asyncio.CancelledError):
        await answer  # let the withdrawal finish
    return None


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects (the body has been read, so only that can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def error_response(request: Request, exc: Exception) -> Response:
    """The answer to a request that failed with ``exc``: ``{"error": ...}`` with its status (a
    HoneError's ``http_status``); the one HTTP error answer of ``hone serve`` and its Ray replicas."""
    if isinstance(exc, HoneError):
        status = exc.http_status
        # Serving errors are logged where they arise (a failed batch once, by the batcher).
        log = logger.warning if status >= 500 and not isinstance(exc, ServingError) else logger.debug
        log("%s %r -> %d: %r", request.method, request.url.path, status, str(exc))
        response = _error(status, str(exc))
        if status == 408:  # the rest of the body may still come: do not read it as the next request
            response.headers["Connection"] = "close"
        return response
    if isinstance(exc, HTTPException):
        message = exc.detail
        if exc.status_code == 404 and exc.detail == "Not Found":
            message = f"no route {request.method} {request.url.path}; see GET /v2 and the KServe v2 protocol"
        response = _error(exc.status_code, str(message))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response
    if isinstance(exc, ClientDisconnect):
        # The client left while its body was being read: nothing to answer, nothing to log loudly.
        logger.debug("%s %s: client went away mid-body", request.method, request.url.path)
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    if isinstance(exc, RequestValidationError):
        return _error(400, f"malformed request: {exc.errors()}")
    logger.error("%s %r failed", request.method, request.url.path, exc_info=exc)
    return _error(500, f"internal error: {type(exc).__name__}: {exc}")


def add_error_handlers(app: FastAPI) -> None:
    """Answer every failure of ``app``'s routes as ``error_response`` does."""
    for kind in (HoneError, HTTPException, ClientDisconnect, RequestValidationError, Exception):
        app.add_exception_handler(kind, _handle)


async def _handle(request: Request, exc: Exception) -> Response:
    return error_response(request, exc)
