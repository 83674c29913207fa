"""Prometheus metrics of a generation server, with the names vLLM users already chart.

``vllm:time_to_first_token_seconds``, ``vllm:inter_token_latency_seconds``,
``vllm:e2e_request_latency_seconds`` (histograms); ``vllm:prompt_tokens_total``,
``vllm:generation_tokens_total``, ``vllm:request_success_total{finished_reason}`` (counters);
``vllm:num_requests_running``, ``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc`` (a fraction
of ``--max-cached-tokens`` reserved, as vLLM's is of its blocks) read from the engine at each scrape;
and hone's own ``hone_generation_tokens_per_second`` (over the last 10 s) and ``hone_kv_cache_bytes``
(the padded arrays actually held).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hone.generate.engine import EngineStats, FinishReason

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)
E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0)
RATE_WINDOW_S = 10.0


class GenerationMetrics:
    """The engine's observer (histograms, counters) and a collector of its live state."""

    def __init__(self, model_name: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ["model_name"]
        self._ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time to first token",
            labels,
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        ).labels(model_name)
        self._itl = Histogram(
            "vllm:inter_token_latency_seconds",
            "Time between tokens of a sequence",
            labels,
            buckets=ITL_BUCKETS,
            registry=self.registry,
        ).labels(model_name)
        self._e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Submit to last token",
            labels,
            buckets=E2E_BUCKETS,
            registry=self.registry,
        ).labels(model_name)
        self._prompt = Counter(
            "vllm:prompt_tokens", "Prompt tokens processed", labels, registry=self.registry
        ).labels(model_name)
        self._generated = Counter(
            "vllm:generation_tokens", "Tokens generated", labels, registry=self.registry
        ).labels(model_name)
        self._success = Counter(
            "vllm:request_success",
            "Finished requests by reason",
            ["model_name", "finished_reason"],
            registry=self.registry,
        )
        self.model_name = model_name
        self._tokens: collections.deque[tuple[float, int]] = collections.deque()
        self._total = 0
        self.stats: EngineStats | None = None
        self.max_cached_tokens = 1

    def attach(self, stats: EngineStats, max_cached_tokens: int) -> None:
        self.stats = stats
        self.max_cached_tokens = max_cached_tokens
        self.registry.register(_LiveCollector(self))

    # EngineObserver, called on the engine thread
    def first_token(self, seconds: float) -> None:
        self._ttft.observe(seconds)
        self._count_token()

    def inter_token(self, seconds: float) -> None:
        self._itl.observe(seconds)
        self._count_token()

    def finished(self, reason: FinishReason, seconds: float, prompt_tokens: int, tokens: int) -> None:
        self._e2e.observe(seconds)
        self._prompt.inc(prompt_tokens)
        self._generated.inc(tokens)
        self._success.labels(self.model_name, reason).inc()

    def _count_token(self) -> None:
        now = time.monotonic()
        self._total += 1
        self._tokens.append((now, self._total))
        while self._tokens and now - self._tokens[0][0] > RATE_WINDOW_S:
            self._tokens.popleft()

    def tokens_per_second(self) -> float:
        now = time.monotonic()
        recent = [(t, n) for t, n in self._tokens if now - t <= RATE_WINDOW_S]
        if len(recent) < 2:
            return 0.0
        return (recent[-1][1] - recent[0][1]) / RATE_WINDOW_S


class _LiveCollector(Collector):
    def __init__(self, metrics: GenerationMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats, name = self.metrics.stats, self.metrics.model_name
        if stats is None:
            return
        values = [
            ("vllm:num_requests_running", "Sequences decoding", stats.running),
            ("vllm:num_requests_waiting", "Requests waiting for admission", stats.waiting),
            (
                "vllm:kv_cache_usage_perc",
                "Fraction of the KV cache's tokens reserved (1 = full)",
                stats.reserved_tokens / self.metrics.max_cached_tokens,
            ),
            ("hone_kv_cache_bytes", "Bytes of the padded KV arrays held", stats.cache_bytes),
            (
                "hone_generation_tokens_per_second",
                f"Tokens generated per second over the last {RATE_WINDOW_S:.0f} s",
                self.metrics.tokens_per_second(),
            ),
        ]
        for metric, documentation, value in values:
            family = GaugeMetricFamily(metric, documentation, labels=["model_name"])
            family.add_metric([name], float(value))
            yield family


__all__ = ["GenerationMetrics"]
