"""The result types of serving that other layers read (the run report renders them): plain
dataclasses that import nothing heavy."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoadLevel:
    """One concurrency level: latency percentiles, throughput and how requests were batched."""

    concurrency: int
    requests: int
    failures: int
    seconds: float
    p50_ms: float
    p99_ms: float
    throughput_per_s: float
    batch_sizes: dict[int, int] = field(default_factory=dict)  # samples in a batch -> batches run


@dataclass
class LoadTestResult:
    """The serving stage of ``hone run``: which artifact, the batcher's knobs, one entry per level."""

    artifact: str
    max_batch_size: int
    max_queue_delay_ms: float
    levels: list[LoadLevel] = field(default_factory=list)
