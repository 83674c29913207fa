"""The result types of ``hone tune``: the settings it searches and what it measured. Plain
dataclasses that import nothing heavy (the report renders them without importing the tuner)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from hone.serve.types import LoadLevel
from hone.session_options import SessionOptions

Objective = Literal["throughput", "latency"]
OBJECTIVES: tuple[Objective, ...] = ("throughput", "latency")
Stage = Literal["defaults", "server", "confirm"]


@dataclass(frozen=True)
class ServerSettings:
    """The batcher's knobs and the instance count of one served model."""

    max_batch_size: int = 32
    max_queue_delay_ms: float = 2.0
    preferred_batch_sizes: tuple[int, ...] = ()
    instances: int = 1

    def label(self) -> str:
        preferred = f" pref {list(self.preferred_batch_sizes)}" if self.preferred_batch_sizes else ""
        return (
            f"batch {self.max_batch_size} delay {self.max_queue_delay_ms:g} ms{preferred} "
            f"x{self.instances} instance(s)"
        )


@dataclass
class VariantReport:
    """One model variant: how it was built, its accuracy gate, and its speed alone (batch 1 and the
    largest batch), raced interleaved against the original."""

    name: str
    description: str
    passed: bool  # the gate (the original passes by definition; rewrites are verified like passes)
    accuracy: str = ""  # the gate's verdict in words
    accuracy_value: float | None = None  # the deciding value (agreement, cosine), for the Pareto colours
    size_bytes: int = 0
    p50_ms_batch1: float | None = None
    samples_per_s_large: float | None = None  # at the race's large batch
    speedup_batch1: float | None = None  # original p50 / this p50, same race
    faster_every_round: bool | None = None
    kept: bool = False  # combined further (runtime and server settings)
    note: str = ""  # why it was dropped, or what it costs (e.g. the shapes it serves)
    cached: bool = False


@dataclass
class RuntimeTrial:
    """One variant under one runtime setting, raced interleaved against its base setting."""

    variant: str
    settings: SessionOptions
    p50_ms: float
    speedup_vs_base: float  # base p50 / this p50
    faster_every_round: bool
    kept: bool = False


@dataclass
class TunePoint:
    """One served configuration measured under closed-loop load at every concurrency level."""

    variant: str
    runtime: SessionOptions
    server: ServerSettings
    stage: Stage
    levels: list[LoadLevel] = field(default_factory=list)
    accuracy_value: float | None = None
    feasible: bool = True  # meets --slo-p99-ms at every level (and the defaults' p99 bound)
    score: float = 0.0  # the objective vs the defaults (geometric mean over levels; > 1 is better)
    cached: bool = False

    @property
    def label(self) -> str:
        return f"{self.variant} | {self.runtime.label()} | {self.server.label()}"

    def level(self, concurrency: int) -> LoadLevel | None:
        return next((lv for lv in self.levels if lv.concurrency == concurrency), None)

    @property
    def worst_p99_ms(self) -> float:
        return max((lv.p99_ms for lv in self.levels), default=math.nan)

    @property
    def total_throughput(self) -> float:
        return sum(lv.throughput_per_s for lv in self.levels)


@dataclass
class Confirmation:
    """The chosen point against the defaults, interleaved (A B A B ...) at each concurrency."""

    concurrency: int
    rounds: int
    default_throughput: float
    chosen_throughput: float
    default_p99_ms: float
    chosen_p99_ms: float
    throughput_ratio_per_round: list[float] = field(default_factory=list)

    @property
    def throughput_ratio(self) -> float:
        return self.chosen_throughput / self.default_throughput if self.default_throughput else math.nan

    @property
    def p99_ratio(self) -> float:
        """defaults' p99 over the chosen one's (> 1: the chosen is faster)."""
        return self.default_p99_ms / self.chosen_p99_ms if self.chosen_p99_ms else math.nan


@dataclass
class TuneResult:
    """What ``hone tune`` searched, measured and chose, and where the repository was written."""

    model: str
    objective: Objective
    slo_p99_ms: float | None
    concurrencies: list[int]
    budget_s: float
    seconds: float = 0.0
    variants: list[VariantReport] = field(default_factory=list)
    runtime_trials: list[RuntimeTrial] = field(default_factory=list)
    points: list[TunePoint] = field(default_factory=list)
    defaults: TunePoint | None = None
    chosen: TunePoint | None = None
    defaults_best: bool = False
    confirmations: list[Confirmation] = field(default_factory=list)
    measured: int = 0  # points measured in this run
    cached: int = 0  # points read back from the cache
    budget_spent: bool = False  # the search stopped because the budget ran out
    repository: str | None = None
    cache_path: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool | None:
        """Whether a configuration was chosen (the defaults count)."""
        return self.chosen is not None

    def line(self) -> str:
        """The winner against the defaults, in one line."""
        if self.chosen is None or self.defaults is None:
            return f"hone tune: {self.model}: nothing chosen"
        if self.defaults_best:
            return (
                f"hone tune: {self.model}: the defaults are best ({self.defaults.label}); "
                f"{self.measured} point(s) measured, {self.cached} from the cache, {self.seconds:.0f} s"
            )
        if self.confirmations:
            ratios = ", ".join(
                f"c={c.concurrency}: {c.throughput_ratio:.2f}x throughput, p99 {c.chosen_p99_ms:.1f} vs "
                f"{c.default_p99_ms:.1f} ms"
                for c in self.confirmations
            )
            how = "interleaved"
        else:
            ratios = f"{self.chosen.score:.2f}x ({self.objective}, geometric mean over the levels)"
            how = "measured apart, not confirmed interleaved"
        return (
            f"hone tune: {self.model}: {self.chosen.label} vs the defaults: {ratios} ({how}); "
            f"{self.measured} point(s) measured, {self.cached} from the cache, {self.seconds:.0f} s"
        )
