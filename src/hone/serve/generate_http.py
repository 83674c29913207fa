"""The HTTP routes of a generation server (FastAPI): KServe v2 health and metadata, the Triton generate
extension (``/v2/models/{m}/generate``, ``/generate_stream`` as server-sent events) and OpenAI's
``/v1/completions``, ``/v1/chat/completions`` and ``/v1/models``; ``/metrics`` for Prometheus.

Every request is checked and queued before the response starts, so a bad one gets its 400 and a
full server its 503 as a plain JSON error; once a stream has begun, an error is sent as a last
``{"error": ...}`` event. A client that goes away (stream closed, or a plain request's connection
dropped) cancels its sequence, which frees its cache for the others.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hone.errors import (
    BodyTimeoutError,
    HoneError,
    InferenceExecutionError,
    InferenceInputError,
    RequestTimeoutError,
    RequestTooLargeError,
    ServedModelNotFoundError,
)
from hone.generate.decoder import Decoder
from hone.generate.engine import Engine, TokenEvent
from hone.generate.tokenizer import TextStream
from hone.serve.generate_metrics import GenerationMetrics
from hone.serve.generate_protocol import ParsedRequest, StopText, parse_chat, parse_completion, parse_generate

DISCONNECT_POLL_S = 0.5
MAX_TOKENS_PER_PIECE = 256  # the most waiting tokens one event carries
_FINISH = {"stop": "stop", "length": "length", "cancelled": "abort"}


@dataclass
class GenerationService:
    name: str
    decoder: Decoder
    engine: Engine
    metrics: GenerationMetrics
    ready: bool = True


@dataclass(frozen=True)
class Piece:
    """Text and the tokens it came from: one token, or several when the stream had fallen behind."""

    text: str
    tokens: tuple[int, ...]
    finish_reason: str | None = None  # set on the last piece


class _Events:
    """The engine thread's events, handed to this request's event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[TokenEvent] = asyncio.Queue()

    def deliver(self, event: TokenEvent) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)


class Generation:
    """One accepted request: ``pieces()`` yields its text as it is generated."""

    def __init__(self, service: GenerationService, parsed: ParsedRequest) -> None:
        self.service = service
        self.parsed = parsed
        self.events = _Events()
        self.id = service.engine.submit(parsed.request, self.events.deliver)  # 400 / 503 here
        self.prompt_tokens = len(parsed.request.prompt)
        self.completion_tokens = 0

    async def pieces(self, disconnected: Callable[[], Awaitable[bool]]) -> AsyncIterator[Piece]:
        """The generation as pieces. The tokens already waiting when the stream comes to send are
        sent as one piece: a stream that falls behind the engine (many streams on one event loop,
        or a model faster than a server-sent event) catches up in fewer, larger events instead of
        falling further behind; one that keeps up sends one token per event. Nothing waits for a
        second token (vLLM's ``--stream-interval`` waits for a fixed count)."""
        tokenizer = self.service.decoder.tokenizer
        text = TextStream(tokenizer) if tokenizer else None
        stop = StopText(self.parsed.stop)
        finished = False
        try:
            while True:
                try:  # asyncio.timeout, not wait_for: no task per token
                    async with asyncio.timeout(DISCONNECT_POLL_S):
                        waiting = [await self.events.queue.get()]
                except TimeoutError:
                    if await disconnected():
                        return
                    continue
                while len(waiting) < MAX_TOKENS_PER_PIECE and not self.events.queue.empty():
                    waiting.append(self.events.queue.get_nowait())
                texts: list[str] = []
                tokens: list[int] = []
                for event in waiting:
                    if event.token is not None:
                        self.completion_tokens += 1
                        tokens.append(event.token)
                        texts.append(stop.push(text.push(event.token)) if text else "")
                        if stop.stopped:
                            finished = True
                            self.service.engine.cancel(self.id)
                            yield Piece("".join(texts), tuple(tokens), "stop")
                            return
                        continue
                    finished = True  # the last event of the sequence
                    if event.finish_reason in ("error", "timeout") and tokens:
                        yield Piece("".join(texts), tuple(tokens))
                    if event.finish_reason == "error":
                        raise InferenceExecutionError(f"generation failed: {event.error}")
                    if event.finish_reason == "timeout":
                        raise RequestTimeoutError(
                            "the request waited longer than its timeout for a free sequence; retry later"
                        )
                    tail = text.text()[len(text.emitted) :] if text else ""
                    texts.append(stop.push(tail) + stop.flush())
                    yield Piece("".join(texts), tuple(tokens), _FINISH.get(event.finish_reason or "", "stop"))
                    return
                yield Piece("".join(texts), tuple(tokens))
        finally:
            if not finished:
                self.service.engine.cancel(self.id)

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def _sse(data: object) -> bytes:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _error_body(exc: HoneError) -> dict[str, Any]:
    return {"error": str(exc)}


def create_generate_app(
    service: GenerationService,
    token: str | None = None,
    *,
    max_body_bytes: int = 4 * 1024 * 1024,
    body_timeout_s: float = 60.0,
) -> FastAPI:
    """The routes; with ``token``, every route but health needs ``Authorization: Bearer <token>``
    (401 otherwise; OpenAI clients send their api_key so). A body is read up to ``max_body_bytes``
    (413 beyond, before it is all held) within ``body_timeout_s`` (408 beyond)."""
    app = FastAPI(title="hone serve (generate)", docs_url=None, redoc_url=None, openapi_url=None)
    if token:
        from hone.serve.http import BearerTokenMiddleware

        app.add_middleware(BearerTokenMiddleware, token=token)

    @app.exception_handler(HoneError)
    async def hone_error(_: Request, exc: HoneError) -> JSONResponse:
        return JSONResponse(_error_body(exc), status_code=exc.http_status)

    def model(name: str) -> GenerationService:
        if name != service.name:
            raise ServedModelNotFoundError(
                f"model {name!r} is not served; this server serves {service.name!r}"
            )
        return service

    async def body_of(request: Request) -> object:
        too_large = RequestTooLargeError(
            f"the request body is over {max_body_bytes} bytes (--max-body-bytes / --max-json-bytes)"
        )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body_bytes:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(body_timeout_s):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > max_body_bytes:
                        raise too_large
                    chunks.append(chunk)
        except TimeoutError as exc:
            raise BodyTimeoutError(f"the request body did not arrive within {body_timeout_s:g} s") from exc
        try:
            return json.loads(b"".join(chunks))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InferenceInputError(f"the request body is not valid JSON ({exc})") from exc

    @app.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(status_code=200 if service.ready else 503)

    @app.get("/v2/models/{name}")
    async def metadata(name: str) -> dict[str, Any]:
        layout = model(name).decoder.layout
        return {
            "name": name,
            "versions": ["1"],
            "platform": "onnxruntime_onnx",
            "generate": {
                "architecture": layout.architecture,
                "max_context": layout.max_context,
                "vocab_size": layout.vocab_size,
                "tokenizer": service.decoder.tokenizer is not None,
            },
        }

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> Response:
        model(name)
        return Response(status_code=200 if service.ready else 503)

    @app.post("/v2/models/{name}/generate")
    async def generate(name: str, request: Request) -> dict[str, Any]:
        parsed = parse_generate(await body_of(request), model(name).decoder.tokenizer, stream=False)
        generation = Generation(service, parsed)
        texts: list[str] = []
        ids: list[int] = []
        reason: str | None = None
        async for piece in generation.pieces(request.is_disconnected):
            texts.append(piece.text)
            ids.extend(piece.tokens)
            reason = piece.finish_reason or reason
        return {
            "model_name": name,
            "model_version": "1",
            "text_output": "".join(texts),
            "output_ids": ids,
            "finish_reason": reason,
            "usage": generation.usage(),
        }

    @app.post("/v2/models/{name}/generate_stream")
    async def generate_stream(name: str, request: Request) -> StreamingResponse:
        parsed = parse_generate(await body_of(request), model(name).decoder.tokenizer, stream=True)
        generation = Generation(service, parsed)

        async def events() -> AsyncIterator[bytes]:
            try:
                async for piece in generation.pieces(request.is_disconnected):
                    event: dict[str, Any] = {
                        "model_name": name,
                        "model_version": "1",
                        "text_output": piece.text,
                    }
                    if piece.tokens:
                        event["output_ids"] = list(piece.tokens)
                    if piece.finish_reason:
                        event["finish_reason"] = piece.finish_reason
                        event["usage"] = generation.usage()
                    yield _sse(event)
            except HoneError as exc:
                yield _sse(_error_body(exc))

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": service.name, "object": "model", "created": 0, "owned_by": "hone"}],
        }

    async def openai_request(request: Request, chat: bool) -> tuple[dict[str, Any], ParsedRequest]:
        body = await body_of(request)
        if not isinstance(body, dict):
            raise InferenceInputError("the request body must be a JSON object")
        model(str(body.get("model", service.name)))
        decoder = service.decoder
        parsed = (
            parse_chat(body, decoder.tokenizer, decoder.chat_template)
            if chat
            else parse_completion(body, decoder.tokenizer)
        )
        return body, parsed

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> dict[str, Any] | StreamingResponse:
        _, parsed = await openai_request(request, chat=False)
        return await _openai_answer(service, request, parsed, chat=False)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> dict[str, Any] | StreamingResponse:
        _, parsed = await openai_request(request, chat=True)
        return await _openai_answer(service, request, parsed, chat=True)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _openai_answer(
    service: GenerationService, request: Request, parsed: ParsedRequest, *, chat: bool
) -> dict[str, Any] | StreamingResponse:
    generation = Generation(service, parsed)
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    created = int(time.time())
    kind = "chat.completion" if chat else "text_completion"
    head = {"id": ident, "created": created, "model": service.name}

    def choice(text: str, reason: str | None, *, delta: bool, first: bool = False) -> dict[str, Any]:
        if not chat:
            return {"index": 0, "text": text, "finish_reason": reason, "logprobs": None}
        if delta:
            content: dict[str, Any] = {"content": text} if text or not reason else {}
            if first:
                content = {"role": "assistant", "content": text}
            return {"index": 0, "delta": content, "finish_reason": reason, "logprobs": None}
        message = {"role": "assistant", "content": text}
        return {"index": 0, "message": message, "finish_reason": reason, "logprobs": None}

    if not parsed.stream:
        texts, reason = [], None
        async for piece in generation.pieces(request.is_disconnected):
            texts.append(piece.text)
            reason = piece.finish_reason or reason
        return {
            **head,
            "object": kind,
            "choices": [choice("".join(texts), reason, delta=False)],
            "usage": generation.usage(),
        }

    chunk_kind = "chat.completion.chunk" if chat else "text_completion"

    async def events() -> AsyncIterator[bytes]:
        first = True
        try:
            async for piece in generation.pieces(request.is_disconnected):
                if not piece.text and not piece.finish_reason and not first:
                    continue
                chunk = {**head, "object": chunk_kind}
                chunk["choices"] = [choice(piece.text, piece.finish_reason, delta=True, first=first)]
                first = False
                yield _sse(chunk)
            if parsed.include_usage:
                yield _sse({**head, "object": chunk_kind, "choices": [], "usage": generation.usage()})
        except HoneError as exc:
            yield _sse({"error": {"message": str(exc), "type": type(exc).__name__}})
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


__all__ = ["Generation", "GenerationService", "Piece", "create_generate_app"]
