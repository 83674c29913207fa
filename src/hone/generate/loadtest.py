"""Checks and a bounded load test of a decoder, for ``hone run`` on a generative model.

- ``cache_check``: the graph's KV-cache path against itself: greedy tokens decoded with the cache,
  several prompts batched with left padding, must equal the tokens of recomputing every prefix from
  an empty cache (prefill only, one prompt at a time). It needs no PyTorch, so it checks any
  decoder file, including a quantized one.
- ``load_test``: the continuous-batching engine in this process (no HTTP), a closed loop of ``c``
  clients at each level, each sending its next request when the last one ends; output tokens/s and
  time to first token / inter-token latency percentiles, measured from the token events.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from hone.generate.decoder import Decoder
from hone.generate.engine import Engine, EngineConfig, GenerationRequest, TokenEvent

R = TypeVar("R")
PROMPT_LENGTHS = (8, 24, 64)
OUTPUT_LENGTHS = (16, 32, 64)


@dataclass(frozen=True)
class CacheCheck:
    prompts: int
    steps: int
    equal: bool
    first_difference: str = ""  # "prompt 2, step 5" when not equal

    def line(self) -> str:
        if self.equal:
            return (
                f"greedy tokens with the KV cache, {self.prompts} prompts batched with left padding, equal "
                f"recomputing every prefix without it ({self.steps} steps)"
            )
        return f"the KV-cache path differs from recomputing without it at {self.first_difference}"


@dataclass(frozen=True)
class GenerationLevel:
    """One concurrency level of generation: tokens/s, time to first token and inter-token latency
    (named apart from hone.serve.types.LoadLevel, whose latencies are whole requests)."""

    concurrency: int
    requests: int
    output_tokens: int
    seconds: float
    tokens_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    itl_p50_ms: float
    itl_p99_ms: float
    # over the requests after each client's first: a closed loop starts with every client's prompt
    # at once, a burst no scheduler can serve at one prompt's latency; this is the loop after it
    ttft_p99_after_start_ms: float = 0.0


@dataclass
class Timing:
    """One request as its client saw it: when it was sent, and when each token arrived."""

    sent: float
    tokens: list[float] = field(default_factory=list)


def summarize(concurrency: int, timings: list[Timing], seconds: float) -> GenerationLevel:
    """Tokens/s, and time to first token / inter-token percentiles over ``timings``."""
    ttft = [(t.tokens[0] - t.sent) * 1000 for t in timings if t.tokens]
    later = sorted((t for t in timings if t.tokens), key=lambda t: t.sent)[concurrency:]
    ttft_later = [(t.tokens[0] - t.sent) * 1000 for t in later]
    gaps = [(b - a) * 1000 for t in timings for a, b in zip(t.tokens, t.tokens[1:], strict=False)]
    tokens = sum(len(t.tokens) for t in timings)

    def pct(values: list[float], q: float) -> float:
        return float(np.percentile(values, q)) if values else 0.0

    return GenerationLevel(
        concurrency=concurrency,
        requests=len(timings),
        output_tokens=tokens,
        seconds=seconds,
        tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
        ttft_p50_ms=pct(ttft, 50),
        ttft_p99_ms=pct(ttft, 99),
        itl_p50_ms=pct(gaps, 50),
        itl_p99_ms=pct(gaps, 99),
        ttft_p99_after_start_ms=pct(ttft_later, 99),
    )


@dataclass
class LoadTest:
    policy: str
    threads: int | None
    prompt_lengths: tuple[int, ...]
    output_lengths: tuple[int, ...]
    levels: list[GenerationLevel] = field(default_factory=list)
    leaked_tokens: int = 0  # reserved tokens left in the engine afterwards (must be 0)
    kv_cache: str = ""  # which cache served ("in-place", or "padded (why)")

    def line(self) -> str:
        parts = [
            f"c={level.concurrency}: {level.tokens_per_s:.0f} tokens/s, TTFT p99 {level.ttft_p99_ms:.1f} ms"
            for level in self.levels
        ]
        cache = f", {self.kv_cache} KV cache" if self.kv_cache else ""
        return f"{self.policy} batching in process{cache}: " + "; ".join(parts)


def _prompts(decoder: Decoder, count: int, lengths: tuple[int, ...], seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    vocab = decoder.layout.vocab_size
    return [rng.integers(0, vocab, size=int(rng.choice(lengths))).tolist() for _ in range(count)]


def cache_check(decoder: Decoder, *, prompts: int = 4, steps: int = 12, seed: int = 0) -> CacheCheck:
    rows = _prompts(decoder, prompts, (2, 5, 9, 3), seed)
    steps = max(1, min(steps, decoder.layout.max_context - max(len(r) for r in rows) - 1))
    cached = decoder.greedy(rows, steps)
    for index, row in enumerate(rows):
        ids = list(row)
        for step in range(steps):
            array = np.asarray([ids], np.int64)
            out = decoder.step(array, np.ones_like(array), np.arange(len(ids))[None], decoder.empty_past(1))
            token = int(out.last_logits[0].argmax())
            if token != cached[index][step]:
                return CacheCheck(prompts, steps, False, f"prompt {index}, step {step}")
            ids.append(token)
    return CacheCheck(prompts, steps, True)


def load_test(
    decoder: Decoder,
    *,
    levels: tuple[int, ...] = (1, 8),
    requests_per_client: int = 2,
    config: EngineConfig | None = None,
    seed: int = 0,
) -> LoadTest:
    config = config or EngineConfig()
    engine = Engine(decoder, config)
    result = LoadTest(config.policy, None, PROMPT_LENGTHS, OUTPUT_LENGTHS, kv_cache=engine.kv_cache)
    longest = decoder.layout.max_context - 1
    try:
        for concurrency in levels:
            count = concurrency * requests_per_client
            prompts = _prompts(decoder, count, PROMPT_LENGTHS, seed + concurrency)
            rng = np.random.default_rng(seed + 1000 + concurrency)
            requests = [
                GenerationRequest(
                    prompt=p,
                    max_tokens=max(1, min(int(rng.choice(OUTPUT_LENGTHS)), longest - len(p))),
                    stop_token_ids=frozenset(),
                )
                for p in prompts
            ]
            result.levels.append(_closed_loop(engine, requests, concurrency))
        result.leaked_tokens = engine.stats.reserved_tokens
    finally:
        engine.close()
    return result


def closed_loop(
    requests: Sequence[R], concurrency: int, send: Callable[[R, Timing], None]
) -> GenerationLevel:
    """``concurrency`` client threads, each sending its next request when the last one is done;
    ``send(request, timing)`` returns when the request is done, having stamped each token's time."""
    pending = list(reversed(requests))
    lock = threading.Lock()
    timings: list[Timing] = []

    def client() -> None:
        while True:
            with lock:
                if not pending:
                    return
                request = pending.pop()
            timing = Timing(time.perf_counter())
            send(request, timing)
            with lock:
                timings.append(timing)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return summarize(concurrency, timings, time.perf_counter() - started)


def _closed_loop(engine: Engine, requests: list[GenerationRequest], concurrency: int) -> GenerationLevel:
    def send(request: GenerationRequest, timing: Timing) -> None:
        done = threading.Event()

        def deliver(event: TokenEvent) -> None:
            if event.token is not None:
                timing.tokens.append(time.perf_counter())
            if event.finish_reason is not None:
                done.set()

        engine.submit(request, deliver)
        done.wait(timeout=300)

    return closed_loop(requests, concurrency, send)


__all__ = [
    "CacheCheck",
    "GenerationLevel",
    "LoadTest",
    "Timing",
    "cache_check",
    "closed_loop",
    "load_test",
    "summarize",
]
