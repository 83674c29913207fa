"""The benchmark's result types, apart from the code that measures them, so that the measuring
modules (``sweep``, ``compare``), the job and the renderers all import them and not each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

# How one configuration runs the model: PyTorch eager, or onnxruntime with graph optimizations off or all on.
Variant = Literal["torch-eager", "ort-disabled", "ort-all"]
VARIANTS: tuple[Variant, ...] = get_args(Variant)
# How the configurations of a result were timed: blocks alternating in one race per batch (every
# variant one block per round), or separate runs merged into one result (``hone.bench.sweep.merge``).
BenchMethod = Literal["interleaved", "merged from separate runs"]


@dataclass
class BenchConfigResult:
    """One measured configuration: a variant at a batch size, thread count and provider."""

    model: str
    variant: str
    provider: str
    batch: int
    threads: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    stdev_ms: float
    min_ms: float
    max_ms: float
    iqr_ms: float
    median_ci_rel: float
    throughput: float  # samples per second at the median latency
    runs: int
    warmup_runs: int
    seconds: float  # time spent in this configuration's timed runs
    stable: bool
    # Growth of process RSS while this configuration's session was built and first run (session +
    # activations), and the process's resident set at its peak then.
    peak_mem_mb: float
    peak_rss_mb: float
    # p50 of the baseline at the same batch divided by this p50, both from the same interleaved race.
    speedup_vs_baseline: float | None = None
    baseline_variant: str | None = None
    # The spread: the median of each round's block of this configuration, in round order, and the
    # baseline's round median over this one's, round by round (one race, so round i of each ran
    # back to back).
    round_p50_ms: list[float] = field(default_factory=list)
    speedup_per_round: list[float] = field(default_factory=list)


@dataclass
class BenchResult:
    model: str
    provider: str
    threads: int
    batches: list[int]
    variants: list[str]
    rel_tol: float
    budget_s: float
    machine: dict[str, str]
    configs: list[BenchConfigResult] = field(default_factory=list)
    # What every speedup is measured against, in words (e.g. "ort-all on the loaded model").
    baseline: str | None = None
    # How the configurations at one batch were timed; "interleaved": for up to ``rounds`` rounds.
    method: BenchMethod = "interleaved"
    rounds: int = 0

    @property
    def unstable(self) -> list[BenchConfigResult]:
        return [c for c in self.configs if not c.stable]

    def best(self, batch: int) -> BenchConfigResult | None:
        at_batch = [c for c in self.configs if c.batch == batch]
        return min(at_batch, key=lambda c: c.p50_ms, default=None)

    def config(self, variant: str, batch: int) -> BenchConfigResult | None:
        return next((c for c in self.configs if c.variant == variant and c.batch == batch), None)
