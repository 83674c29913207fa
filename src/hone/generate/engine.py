"""Iteration-level scheduling of generation requests over one ``Decoder`` (continuous batching).

A thread runs the loop; each iteration is one scheduling decision under a budget of
``max_batched_tokens`` tokens (one for each decoding sequence, the rest for prompts):

1. prompts already being prefilled in chunks take their next chunk, oldest first;
2. waiting requests whose turn it is (priority 0 first, then arrival) are admitted while the
   sequences stay under ``max_sequences`` and the tokens reserved for them (prompt + ``max_tokens``)
   under ``max_cached_tokens``, each with as much of its prompt as the budget has left: all of it,
   or a first chunk (at least ``CHUNK_FLOOR`` tokens) when it is longer (chunked prefill);
3. the prompts that fit whole are prefilled together (the cache groups them by length), the chunks
   one by one; a prompt's last chunk yields its first token;
4. every decoding sequence then advances one token in one decode step (the newly prefilled included);
5. sequences that produced a stop token, reached ``max_tokens``, were cancelled or timed out leave,
   and their reservation is freed for the next iteration.

So requests join and leave between decode steps, and prefill and decode share each iteration under
the token budget: a long prompt no longer stalls the running sequences for its whole prefill. Memory
is bounded: a request is only admitted when its whole reservation fits, so a running sequence never
runs out of cache and nothing is preempted; at most ``max_waiting`` requests wait
(``QueueFullError``, 503, beyond).

``policy`` also gives the two baselines the benchmark compares against: ``"static"`` (wait for a full
batch or ``static_wait_ms``, run it until its longest request ends, admit nothing meanwhile) and
``"sequential"`` (one request at a time). ``"static"`` prefills its prompts whole, as a static batcher
does; the others chunk.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from hone.errors import InputError, QueueFullError, ServerShuttingDownError
from hone.generate.batch_cache import PaddedCache
from hone.generate.decoder import Decoder
from hone.generate.inplace_kv import InPlaceCache, inplace_cache
from hone.generate.sampling import SamplingParams, sample

logger = logging.getLogger(__name__)

Policy = Literal["continuous", "static", "sequential"]
KVCacheKind = Literal["auto", "in-place", "padded"]
KV_CACHES: tuple[KVCacheKind, ...] = ("auto", "in-place", "padded")
POLICIES: tuple[Policy, ...] = ("continuous", "static", "sequential")
FinishReason = Literal["stop", "length", "cancelled", "timeout", "error"]
CHUNK_FLOOR = 16  # the smallest chunk a prompt is prefilled by (unless less of it is left)


@dataclass(frozen=True)
class EngineConfig:
    policy: Policy = "continuous"
    max_sequences: int = 32  # sequences decoding at once
    max_cached_tokens: int = 16384  # prompt + max_tokens reserved over all running sequences
    max_batched_tokens: int = 1024  # tokens per iteration: one per decoding sequence + prompt tokens
    max_waiting: int = 256  # requests waiting for admission; 503 beyond
    kv_cache: KVCacheKind = "auto"  # "auto": in-place when the graph allows it (checked), else padded
    static_wait_ms: float = 50.0  # "static": how long the first request waits for a full batch
    priority_levels: int = 2

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise InputError(f"policy {self.policy!r} is unknown; choose one of: {', '.join(POLICIES)}")
        if self.kv_cache not in KV_CACHES:
            raise InputError(f"kv cache {self.kv_cache!r} is unknown; choose one of: {', '.join(KV_CACHES)}")
        for name in ("max_sequences", "max_cached_tokens", "max_batched_tokens", "max_waiting"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class GenerationRequest:
    prompt: list[int]
    max_tokens: int
    sampling: SamplingParams = SamplingParams()
    stop_token_ids: frozenset[int] | None = None  # None: the model's end-of-sequence tokens
    priority: int = 0
    timeout_s: float | None = None  # longest wait for admission; "timeout" after it


@dataclass(frozen=True)
class TokenEvent:
    """One generated token, or the end of the sequence (``finish_reason`` set, ``token`` None)."""

    token: int | None
    finish_reason: FinishReason | None = None
    error: str | None = None


class EngineObserver(Protocol):
    def first_token(self, seconds: float) -> None: ...
    def inter_token(self, seconds: float) -> None: ...
    def finished(self, reason: FinishReason, seconds: float, prompt_tokens: int, tokens: int) -> None: ...


@dataclass
class _Sequence:
    id: int
    request: GenerationRequest
    deliver: Callable[[TokenEvent], None]
    submitted: float
    stop_ids: frozenset[int]
    prefilled: int = 0  # prompt tokens in the cache
    generated: int = 0
    next_token: int = 0
    last_token_at: float = 0.0
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    done: FinishReason | None = None

    @property
    def reservation(self) -> int:
        return len(self.request.prompt) + self.request.max_tokens


@dataclass(frozen=True)
class _Chunk:
    """Prompt tokens [start, end) of a sequence to prefill in this iteration."""

    sequence: _Sequence
    start: int
    end: int

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.end == len(self.sequence.request.prompt)


@dataclass
class EngineStats:
    running: int = 0  # decoding or being prefilled
    waiting: int = 0
    reserved_tokens: int = 0
    cached_tokens: int = 0  # real tokens in the cache
    cache_bytes: int = 0  # the padded arrays' bytes
    prompt_tokens: int = 0
    generation_tokens: int = 0
    steps: int = 0
    finished: dict[str, int] = field(default_factory=dict)


class Engine:
    """Owns the decoder and the cache; ``submit`` from any thread, events come back by ``deliver``."""

    def __init__(
        self, decoder: Decoder, config: EngineConfig | None = None, observer: EngineObserver | None = None
    ) -> None:
        self.decoder = decoder
        self.config = config or EngineConfig()
        if self.config.policy == "sequential":
            self.config = EngineConfig(**{**self.config.__dict__, "max_sequences": 1})
        self.observer = observer
        self.layout = decoder.layout
        self.stats = EngineStats()
        self._lock = threading.Condition()
        self._waiting: list[tuple[int, int, _Sequence]] = []  # heap of (priority, arrival, sequence)
        self._running: dict[int, _Sequence] = {}  # decoding
        self._prefilling: dict[int, _Sequence] = {}  # admitted, prompt partly in the cache
        self._cancelled: set[int] = set()
        self._ids = itertools.count()
        self._kv = self._cache()
        self._accepting = True
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="hone-generate", daemon=True)
        self._thread.start()

    # --- the caller's side -------------------------------------------------------------------------

    def check(self, request: GenerationRequest) -> None:
        """The request's 400s, before it is queued."""
        context = self.layout.max_context
        if not request.prompt:
            raise InputError("the prompt is empty; give at least one token")
        if any(not 0 <= t < self.layout.vocab_size for t in request.prompt):
            raise InputError(f"prompt token ids must be in [0, {self.layout.vocab_size})")
        if request.max_tokens < 1:
            raise InputError(f"max_tokens must be at least 1, got {request.max_tokens}")
        if len(request.prompt) >= context:
            raise InputError(
                f"the prompt has {len(request.prompt)} tokens; this model's context is {context}"
            )
        if len(request.prompt) + request.max_tokens > context:
            raise InputError(
                f"prompt ({len(request.prompt)} tokens) + max_tokens ({request.max_tokens}) exceeds the "
                f"context of {context}; lower max_tokens to at most {context - len(request.prompt)}"
            )
        if len(request.prompt) + request.max_tokens > self.config.max_cached_tokens:
            raise InputError(
                f"prompt + max_tokens ({len(request.prompt) + request.max_tokens}) exceeds the server's "
                f"KV cache of {self.config.max_cached_tokens} tokens; lower max_tokens"
            )
        levels = self.config.priority_levels
        if not 0 <= request.priority < levels:
            raise InputError(f"priority must be an integer from 0 (highest) to {levels - 1}")

    def submit(self, request: GenerationRequest, deliver: Callable[[TokenEvent], None]) -> int:
        """Queue ``request``; returns its sequence id. Raises InputError (400) or QueueFullError (503)."""
        self.check(request)
        stop_ids = (
            request.stop_token_ids
            if request.stop_token_ids is not None
            else frozenset(self.layout.eos_token_ids)
        )
        with self._lock:
            if not self._accepting:
                raise ServerShuttingDownError("the server is shutting down; retry on another replica")
            if len(self._waiting) >= self.config.max_waiting:
                raise QueueFullError(
                    f"{len(self._waiting)} generation requests are already waiting "
                    f"(--max-waiting {self.config.max_waiting}); retry later"
                )
            sequence = _Sequence(
                id=next(self._ids),
                request=request,
                deliver=deliver,
                submitted=time.perf_counter(),
                stop_ids=stop_ids,
                rng=np.random.default_rng(request.sampling.seed),
            )
            heapq.heappush(self._waiting, (request.priority, sequence.id, sequence))
            self.stats.waiting = len(self._waiting)
            self._lock.notify()
        return sequence.id

    def cancel(self, sequence_id: int) -> None:
        """Stop a sequence (its client went away or a stop string was met); frees its cache."""
        with self._lock:
            self._cancelled.add(sequence_id)
            self._lock.notify()

    def close(self, *, drain: bool = True, timeout_s: float = 30.0) -> None:
        """Refuse new requests; with ``drain`` finish the accepted ones, then stop the thread."""
        with self._lock:
            self._accepting = False
            if not drain:
                for _, _, sequence in self._waiting:
                    self._cancelled.add(sequence.id)
                self._cancelled.update(self._running)
            self._stop = True
            self._lock.notify()
        self._thread.join(timeout_s)

    @property
    def idle(self) -> bool:
        with self._lock:
            return not self._waiting and not self._running and not self._prefilling

    # --- the engine thread -------------------------------------------------------------------------

    @property
    def kv_cache(self) -> str:
        """Which cache serves ("in-place" or "padded"), and when padded under "auto", why."""
        return self._kv.name + (f" ({self.kv_cache_reason})" if self.kv_cache_reason else "")

    def _cache(self) -> PaddedCache | InPlaceCache:
        self.kv_cache_reason = ""
        if self.config.kv_cache == "padded":
            return PaddedCache(self.decoder)
        found = inplace_cache(
            self.decoder, self.config.max_sequences, threads=self.decoder.session.config.threads
        )
        if isinstance(found, InPlaceCache):
            return found
        if self.config.kv_cache == "in-place":
            raise InputError(f"the in-place KV cache cannot serve {self.decoder.model.name}: {found}")
        self.kv_cache_reason = f"in-place not used: {found}"
        return PaddedCache(self.decoder)

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not (self._waiting or self._running or self._prefilling or self._cancelled):
                    if self._stop:
                        return
                    self._lock.wait()
                cancelled, self._cancelled = self._cancelled, set()
                chunks = self._schedule(cancelled)
            admitted = any(chunk.start == 0 for chunk in chunks)
            try:
                if chunks:
                    self._prefill(chunks)
                if self._running:
                    self._decode()
            except Exception as exc:  # a failed step fails its sequences; the engine keeps serving
                logger.exception("generation step failed")
                self._fail_all(f"{type(exc).__name__}: {exc}", [chunk.sequence for chunk in chunks])
            self._retire()
            if self.config.policy == "static" and not self._running and not admitted:
                self._wait_for_static_batch()

    def _schedule(self, cancelled: set[int]) -> list[_Chunk]:
        """Under the lock: drop cancelled/expired waiters, mark cancelled sequences, and pick this
        iteration's prompt chunks under the token budget (see the module docstring)."""
        now = time.perf_counter()
        kept: list[tuple[int, int, _Sequence]] = []
        for entry in self._waiting:
            sequence = entry[2]
            timeout = sequence.request.timeout_s
            if sequence.id in cancelled:
                self._finish(sequence, "cancelled")
            elif timeout is not None and now - sequence.submitted > timeout:
                self._finish(sequence, "timeout")
            else:
                kept.append(entry)
        heapq.heapify(kept)
        self._waiting = kept
        for sequences in (self._running, self._prefilling):
            for sid in cancelled & set(sequences):
                sequences[sid].done = "cancelled"
        if self.config.policy == "static" and (
            self._running or self._prefilling or not self._static_batch_ready(now)
        ):
            self.stats.waiting = len(self._waiting)
            return []
        floor = min(CHUNK_FLOOR, self.config.max_batched_tokens)
        budget = max(self.config.max_batched_tokens - len(self._running), floor)
        chunks: list[_Chunk] = []
        for sequence in self._prefilling.values():  # admission order
            left = len(sequence.request.prompt) - sequence.prefilled
            take = min(left, budget)
            if sequence.done or take < min(floor, left):
                continue
            chunks.append(_Chunk(sequence, sequence.prefilled, sequence.prefilled + take))
            budget -= take
        admitted = len(self._running) + len(self._prefilling)
        reserved = sum(s.reservation for s in (*self._running.values(), *self._prefilling.values()))
        while self._waiting and admitted < self.config.max_sequences:
            candidate = self._waiting[0][2]
            length = len(candidate.request.prompt)
            if self.config.policy == "static":  # whole prompts; the first one always
                take = length if not chunks or length <= budget else 0
            else:
                take = min(length, budget) if budget >= min(floor, length) else 0
            if take == 0 or reserved + candidate.reservation > self.config.max_cached_tokens:
                break
            heapq.heappop(self._waiting)
            chunks.append(_Chunk(candidate, 0, take))
            budget -= take
            admitted += 1
            reserved += candidate.reservation
        self.stats.waiting = len(self._waiting)
        self.stats.reserved_tokens = reserved
        return chunks

    def _static_batch_ready(self, now: float) -> bool:
        if not self._waiting:
            return False
        oldest = min(entry[2].submitted for entry in self._waiting)
        full = len(self._waiting) >= self.config.max_sequences
        return full or (now - oldest) * 1000.0 >= self.config.static_wait_ms

    def _wait_for_static_batch(self) -> None:
        with self._lock:
            if self._waiting and not self._static_batch_ready(time.perf_counter()):
                self._lock.wait(self.config.static_wait_ms / 1000.0)

    def _prefill(self, chunks: list[_Chunk]) -> None:
        """Whole prompts together, then the chunks one by one; a finished prompt yields its first
        token and its sequence decodes from this iteration's decode step."""
        whole = [chunk.sequence for chunk in chunks if chunk.whole]
        finished: list[tuple[_Sequence, np.ndarray]] = []
        if whole:
            logits = self._kv.prefill([s.request.prompt for s in whole], [s.id for s in whole])
            finished += zip(whole, logits, strict=True)
        for chunk in chunks:
            if chunk.whole:
                continue
            sequence, prompt = chunk.sequence, chunk.sequence.request.prompt
            last = chunk.end == len(prompt)
            logits = self._kv.extend(sequence.id, prompt[chunk.start : chunk.end], chunk.start, last=last)
            sequence.prefilled = chunk.end
            if last:
                self._prefilling.pop(sequence.id, None)
                finished.append((sequence, logits))
            else:
                self._prefilling[sequence.id] = sequence
        self.stats.steps += 1
        now = time.perf_counter()
        for sequence, row_logits in finished:
            sequence.prefilled = len(sequence.request.prompt)
            self._running[sequence.id] = sequence
            self.stats.prompt_tokens += len(sequence.request.prompt)
            self._emit(sequence, row_logits, now, first=True)

    def _decode(self) -> None:
        # a free slot, or a row still being prefilled (None), decodes too; its token is not used
        rows = [None if sid is None else self._running.get(sid) for sid in self._kv.ids]
        if all(s is None or s.done for s in rows):
            return
        tokens = np.asarray([0 if s is None else s.next_token for s in rows], np.int64)
        logits = self._kv.decode(tokens)
        self.stats.steps += 1
        now = time.perf_counter()
        for row, sequence in enumerate(rows):
            if sequence is not None and sequence.done is None:
                self._emit(sequence, logits[row], now, first=False)

    def _emit(self, sequence: _Sequence, logits: np.ndarray, now: float, *, first: bool) -> None:
        token = sample(logits, sequence.request.sampling, sequence.rng)
        if self.observer is not None:
            if first:
                self.observer.first_token(now - sequence.submitted)
            else:
                self.observer.inter_token(now - sequence.last_token_at)
        sequence.last_token_at = now
        if token in sequence.stop_ids:
            sequence.done = "stop"
            return
        sequence.generated += 1
        sequence.next_token = token
        self.stats.generation_tokens += 1
        sequence.deliver(TokenEvent(token))
        if sequence.generated >= sequence.request.max_tokens:
            sequence.done = "length"

    def _retire(self) -> None:
        """Finished sequences leave the batch (static: only when the whole batch is done)."""
        done = {sid for sid, s in self._running.items() if s.done}
        if self.config.policy == "static" and len(done) < len(self._running):
            done = {sid for sid in done if self._running[sid].done == "cancelled"}
        dropped = {sid for sid, s in self._prefilling.items() if s.done}  # cancelled mid-prefill
        if done or dropped:
            self._kv.remove(done | dropped)
            for sid in done:
                sequence = self._running.pop(sid)
                self._finish(sequence, sequence.done or "stop")
            for sid in dropped:
                sequence = self._prefilling.pop(sid)
                self._finish(sequence, sequence.done or "cancelled")
        if not self._running and not self._prefilling:
            self._kv.reset()
        with self._lock:
            self.stats.running = len(self._running) + len(self._prefilling)
            self.stats.reserved_tokens = sum(
                s.reservation for s in (*self._running.values(), *self._prefilling.values())
            )
            self.stats.cached_tokens = self._kv.tokens()
            self.stats.cache_bytes = self._kv.nbytes()

    def _finish(self, sequence: _Sequence, reason: FinishReason, error: str | None = None) -> None:
        self.stats.finished[reason] = self.stats.finished.get(reason, 0) + 1
        if self.observer is not None:
            self.observer.finished(
                reason,
                time.perf_counter() - sequence.submitted,
                len(sequence.request.prompt),
                sequence.generated,
            )
        sequence.deliver(TokenEvent(None, reason, error))

    def _fail_all(self, message: str, joining: list[_Sequence]) -> None:
        """Every admitted sequence ends with ``message``: the running, the prefilling, and those
        ``joining`` in the failed iteration (in neither yet when their first prefill failed)."""
        failed = {s.id: s for s in [*self._running.values(), *self._prefilling.values(), *joining]}
        for sequence in failed.values():
            if sequence.done is not None:  # it had ended before the failure: its own reason
                self._finish(sequence, sequence.done)
                continue
            sequence.done = "error"
            self._finish(sequence, "error", message)
        self._running.clear()
        self._prefilling.clear()
        self._kv.reset()


__all__ = [
    "CHUNK_FLOOR",
    "POLICIES",
    "Engine",
    "EngineConfig",
    "EngineObserver",
    "EngineStats",
    "FinishReason",
    "KV_CACHES",
    "KVCacheKind",
    "GenerationRequest",
    "Policy",
    "TokenEvent",
]
