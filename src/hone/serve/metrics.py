"""Prometheus metrics of ``hone serve``, in a registry of their own, named like Triton's.

Triton's per-model counters come straight from each batcher's ``BatcherStats`` when scraped (one
source of truth for the counts the statistics extension reports too), labelled ``model`` and
``version`` as Triton labels them:

    nv_inference_request_success          requests answered with outputs
    nv_inference_request_failure          requests answered with an error (refused ones included)
    nv_inference_count                    samples run (a batch of 8 counts 8)
    nv_inference_exec_count               batches run
    nv_inference_request_duration_us      submit-to-answer time of every request, summed
    nv_inference_queue_duration_us        time requests waited in the queue, summed
    nv_inference_compute_input_duration_us / _infer_ / _output_   a batch's compute time, counted
                                          once per request in it (as Triton does)

Triton exposes these as counters without the ``_total`` suffix that prometheus-client's text
format appends to every counter; to keep Triton's exact names (so its dashboards work unchanged)
they are exposed untyped. Their values only grow, as counters' do (until the model is reloaded).

hone's own:

    hone_batch_size                 histogram of samples per batch run
    hone_request_latency_seconds    histogram of submit-to-answer time per request
    hone_inflight_requests          gauge: requests accepted and not yet answered (queued or running)
    hone_queue_depth                gauge: requests waiting in the queue

The histograms are fed by ``ModelObserver``, the batcher's observer; the gauges are read from the
batchers when scraped. The metrics app (``asgi_app``) runs on the server's event loop, so a scrape
reads the batchers on the thread that changes them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.asgi import make_asgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp

from hone.serve.batcher import BatcherStats

logger = logging.getLogger(__name__)

LABELS = ("model", "version")
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)

StatsSource = Callable[[], BatcherStats]

# Triton's counter name, its help, and how to read it from BatcherStats.
_TRITON_COUNTERS: tuple[tuple[str, str, Callable[[BatcherStats], int]], ...] = (
    (
        "nv_inference_request_success",
        "Number of successful inference requests, all batch sizes",
        lambda s: s.request_success,
    ),
    (
        "nv_inference_request_failure",
        "Number of failed inference requests, all batch sizes",
        lambda s: s.request_failure,
    ),
    (
        "nv_inference_count",
        "Number of inferences performed (samples; a batch of 8 counts 8)",
        lambda s: s.inference_count,
    ),
    (
        "nv_inference_exec_count",
        "Number of model executions performed (batches)",
        lambda s: s.execution_count,
    ),
    (
        "nv_inference_request_duration_us",
        "Cumulative inference request duration in microseconds",
        lambda s: (s.success_ns + s.failure_ns) // 1000,
    ),
    (
        "nv_inference_queue_duration_us",
        "Cumulative inference queuing duration in microseconds",
        lambda s: s.queue_ns // 1000,
    ),
    (
        "nv_inference_compute_input_duration_us",
        "Cumulative compute input duration in microseconds",
        lambda s: s.compute_input_ns // 1000,
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "Cumulative compute inference duration in microseconds",
        lambda s: s.compute_infer_ns // 1000,
    ),
    (
        "nv_inference_compute_output_duration_us",
        "Cumulative compute output duration in microseconds",
        lambda s: s.compute_output_ns // 1000,
    ),
)


@dataclass
class BatchTiming:
    """Batches of one size: how many ran and their compute time (input + infer + output), summed."""

    count: int = 0
    compute_ns: int = 0


@dataclass
class ModelObserver:
    """The batcher's observer for one model version: feeds the histograms, keeps per-size timings.

    Called on the event loop's thread (the batcher's contract); never blocks.
    """

    batch_size: Histogram
    latency_seconds: Histogram
    batch_timings: dict[int, BatchTiming] = field(default_factory=dict)

    def on_batch(self, size: int, queue_ns: Sequence[int], compute_ns: int) -> None:
        self.batch_size.observe(size)
        timing = self.batch_timings.setdefault(size, BatchTiming())
        timing.count += 1
        timing.compute_ns += compute_ns

    def on_request(self, success: bool, latency_ns: int) -> None:
        self.latency_seconds.observe(latency_ns / 1e9)


class ServeMetrics:
    """The metrics of one server: register a model version with ``observe``, drop it with ``forget``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._sources: dict[tuple[str, str], StatsSource] = {}
        self._batch_size = Histogram(
            "hone_batch_size",
            "Samples per batch run",
            LABELS,
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self._latency = Histogram(
            "hone_request_latency_seconds",
            "Submit-to-answer time per request, in seconds",
            LABELS,
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.registry.register(_BatcherCollector(self._sources))

    def observe(self, model: str, version: str, stats: StatsSource) -> ModelObserver:
        """Start reporting a model version: ``stats`` is read at each scrape; give the result to its
        Batcher."""
        self._sources[(model, version)] = stats
        return ModelObserver(
            batch_size=self._batch_size.labels(model, version),
            latency_seconds=self._latency.labels(model, version),
        )

    def forget(self, model: str, version: str) -> None:
        """Stop reporting a model version (it was unloaded); a reload starts its counts afresh."""
        self._sources.pop((model, version), None)
        for histogram in (self._batch_size, self._latency):
            try:
                histogram.remove(model, version)
            except KeyError:
                pass

    def render(self) -> bytes:
        """The Prometheus text format of every metric (what a scrape gets)."""
        return generate_latest(self.registry)

    def asgi_app(self) -> ASGIApp:
        """An ASGI app that answers every GET with the metrics (served on its own port)."""
        return make_asgi_app(self.registry)


class _BatcherCollector(Collector):
    """Triton's counters and hone's gauges, read from every registered batcher when scraped."""

    def __init__(self, sources: dict[tuple[str, str], StatsSource]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        snapshots = []
        for (model, version), stats in list(self._sources.items()):
            try:
                snapshots.append(((model, version), stats()))
            except Exception:  # a scrape must never fail because one model is going away
                logger.debug("metrics: stats of %s v%s unavailable", model, version, exc_info=True)
        for name, documentation, read in _TRITON_COUNTERS:
            metric = Metric(name, documentation, "unknown")
            for (model, version), snapshot in snapshots:
                metric.add_sample(name, {"model": model, "version": version}, float(read(snapshot)))
            yield metric
        inflight = GaugeMetricFamily(
            "hone_inflight_requests",
            "Requests accepted and not yet answered (queued or running)",
            labels=LABELS,
        )
        depth = GaugeMetricFamily("hone_queue_depth", "Requests waiting in the queue", labels=LABELS)
        for labels, snapshot in snapshots:
            inflight.add_metric(list(labels), snapshot.queue_depth + snapshot.in_flight)
            depth.add_metric(list(labels), snapshot.queue_depth)
        yield inflight
        yield depth
