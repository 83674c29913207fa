"""The search of ``hone tune``: measured, pruned, bounded by a time budget, resumable.

Given the model's verified variants (``variants.py``), the search runs these stages, each on what
the one before kept, every number from a measurement (``measure.py``) and every comparison between
contenders from one interleaved race:

1. **Variants alone.** Every variant that passed the gate is raced against the original at batch 1
   and at a large batch. One that is not faster than the original in every round is not combined
   further; the best ``top_variants`` (by the objective's figure) go on. An SLO below what one
   request alone needs with the fastest of them is refused here, with the least feasible target.
2. **The defaults.** What ``hone serve MODEL`` does (the original model, onnxruntime's defaults
   with the cores as threads, the batcher's defaults, one instance) under closed-loop load at every
   concurrency: the point every other one is scored against, and a candidate winner itself.
3. **Session options.** On each kept variant, one race of the base options against each option
   changed alone (spinning, parallel execution, arena, memory pattern, graph level); a change that
   is faster in every round and by ``MIN_OPTION_GAIN`` is kept, all kept changes are combined and
   raced once more.
4. **Server settings.** For each kept (variant, options) and each split of the cores into
   instances x threads, the latency-vs-batch curve seeds the batcher's knobs (the knee of the
   throughput curve, the largest batch that fits the SLO, a queue delay of one batch's p50 or
   none); each seed is measured under load at every concurrency, then the best is refined once
   (its batch size halved and doubled). A seed's queue delay is at most ``MAX_SEED_DELAY_MS``.
5. **The choice.** The feasible point (p99 within the SLO, else no worse than the defaults' p99 at
   any level) with the best score (throughput, or p99, against the defaults; geometric mean over
   the levels). It is measured again interleaved with the defaults (A B A B at each level); unless
   it wins that too, the defaults are kept: the search can and does answer "the defaults are best".

Budget: every measurement first checks that its estimated cost fits what is left of the budget
once the confirmation's share is set aside (the defaults and the confirmation itself may use that
share); the first that does not ends the search (``budget_spent``), which then chooses among what
it measured. Resume: every measurement goes through the cache under a key naming what it depends on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from hone.errors import OptionError
from hone.model import Model
from hone.serve.slo import HEADROOM, THROUGHPUT_MARGIN, BatchPoint
from hone.serve.types import LoadLevel
from hone.session_options import SessionOptions
from hone.tune.cache import PointCache, key_of
from hone.tune.measure import Measurer, Timing
from hone.tune.types import (
    Confirmation,
    Objective,
    RuntimeTrial,
    ServerSettings,
    Stage,
    TunePoint,
    TuneResult,
    VariantReport,
)

logger = logging.getLogger(__name__)

# A candidate must beat the defaults' score by this much to be chosen over them.
MIN_GAIN = 1.03
# Without an SLO, a point's p99 may exceed the defaults' by this much at a level (measurement noise).
P99_TOLERANCE = 1.10
LARGE_BATCH = 8
CONFIRM_ROUNDS = 2
# A session option is kept only when it is faster in every round of its race and by this much.
MIN_OPTION_GAIN = 1.03
# The longest queue delay a seed proposes: beyond it a request waits more than a batch could repay.
MAX_SEED_DELAY_MS = 5.0


def option_changes(cores: int) -> tuple[tuple[str, dict[str, object]], ...]:
    """The session options tried one at a time against the base, each a change from onnxruntime's
    default (parallel execution gets the cores as inter-op threads: with one it cannot overlap)."""
    return (
        ("no-spin", {"spinning": False}),
        ("parallel", {"execution_mode": "parallel", "inter_threads": max(2, cores)}),
        ("no-arena", {"arena": False}),
        ("no-mem-pattern", {"mem_pattern": False}),
        ("opt-extended", {"optimization": "extended"}),
    )


Progress = Callable[[str, float], None]  # what is being measured, share of the budget spent


@dataclass(frozen=True)
class SearchSettings:
    concurrencies: tuple[int, ...] = (1, 8, 32)
    objective: Objective = "throughput"
    slo_p99_ms: float | None = None
    budget_s: float = 300.0
    seconds_per_level: float = 1.5
    race_seconds: float = 2.0
    top_variants: int = 2
    cores: int = 2


@dataclass
class Variant:
    """A verified model variant and its report (``variants.py`` builds them)."""

    report: VariantReport
    model: Model


class BudgetSpent(Exception):
    """The next measurement does not fit in what is left of the budget."""


@dataclass
class Search:
    measurer: Measurer
    cache: PointCache
    clock: Callable[[], float]
    settings: SearchSettings
    key: str  # the model, its data, the machine, hone's version: what every measurement depends on
    result: TuneResult
    progress: Progress | None = None
    started: float = 0.0
    _variants: dict[str, Variant] = field(default_factory=dict)

    # -- budget, cache, progress --------------------------------------------------------------

    def spent(self) -> float:
        return self.clock() - self.started

    def left(self) -> float:
        return self.settings.budget_s - self.spent()

    @property
    def confirm_cost_s(self) -> float:
        """What the interleaved confirmation takes: the search keeps it in hand for the end."""
        return 2 * CONFIRM_ROUNDS * self.point_cost_s

    def _measure(
        self,
        kind: str,
        parts: Sequence[object],
        cost_s: float,
        what: str,
        compute: Callable[[], object],
        *,
        reserve: bool = True,
    ):
        """The cached value of this measurement, else measured when ``cost_s`` fits the budget (with
        ``reserve``, what is left after the confirmation's share)."""
        key = key_of(self.key, kind, *parts)
        hit = self.cache.get(key)
        if hit is not None:
            self.result.cached += 1
            return hit, True
        if cost_s + (self.confirm_cost_s if reserve else 0.0) > self.left():
            raise BudgetSpent(what)
        if self.progress is not None:
            self.progress(what, min(1.0, self.spent() / self.settings.budget_s))
        value = compute()
        self.cache.put(key, kind, value)
        self.result.measured += 1
        return value, False

    @property
    def point_cost_s(self) -> float:
        return len(self.settings.concurrencies) * self.settings.seconds_per_level

    # -- measurements ---------------------------------------------------------------------------

    def race(
        self, contenders: Mapping[str, tuple[Variant, SessionOptions]], batch: int, what: str
    ) -> tuple[dict[str, Timing], bool]:
        parts: list[object] = [batch, self.settings.race_seconds]
        parts += sorted((label, v.report.name, o.to_json()) for label, (v, o) in contenders.items())

        def compute() -> object:
            timings = self.measurer.race(
                {label: (v.model, o) for label, (v, o) in contenders.items()},
                batch=batch,
                seconds=self.settings.race_seconds,
            )
            return {label: [t.p50_ms, list(t.round_p50_ms), t.runs, t.p99_ms] for label, t in timings.items()}

        raw, cached = self._measure("race", parts, self.settings.race_seconds, what, compute)
        return {
            label: Timing(p50, tuple(rounds), runs, p99) for label, (p50, rounds, runs, p99) in raw.items()
        }, cached

    def curve(self, variant: Variant, options: SessionOptions, instances: int) -> list[BatchPoint]:
        largest = max(self.settings.concurrencies)
        stop = HEADROOM * self.settings.slo_p99_ms / 2 if self.settings.slo_p99_ms else math.inf
        parts = [variant.report.name, options.to_json(), instances, largest, stop]

        def compute() -> object:
            points = self.measurer.curve(
                variant.model, options, instances=instances, stop_above_ms=stop, largest=largest
            )
            return [[p.batch, p.p50_ms, p.p99_ms, p.runs, p.samples_per_s] for p in points]

        what = f"curve: {variant.report.name} {options.label()} x{instances}"
        raw, _ = self._measure("curve", parts, self.settings.race_seconds, what, compute)
        return [BatchPoint(*row) for row in raw]

    def point(
        self,
        variant: Variant,
        options: SessionOptions,
        server: ServerSettings,
        stage: Stage,
        tag: str = "",
    ) -> TunePoint:
        """One configuration under load at every concurrency (each level cached on its own)."""
        point = TunePoint(
            variant.report.name, options, server, stage, accuracy_value=variant.report.accuracy_value
        )
        all_cached = True
        for concurrency in self.settings.concurrencies:
            parts = [
                variant.report.name,
                options.to_json(),
                server.label(),
                concurrency,
                self.settings.seconds_per_level,
                tag,
            ]

            def compute(concurrency: int = concurrency) -> object:
                level = self.measurer.serve(
                    variant.model,
                    options,
                    server,
                    concurrency=concurrency,
                    seconds=self.settings.seconds_per_level,
                )
                return _level_json(level)

            what = f"load c={concurrency}: {variant.report.name} | {options.label()} | {server.label()}"
            raw, cached = self._measure(
                "level",
                parts,
                self.settings.seconds_per_level,
                what,
                compute,
                reserve=stage not in ("defaults", "confirm"),
            )
            all_cached = all_cached and cached
            point.levels.append(_level_from_json(raw))
        point.cached = all_cached
        return point

    # -- the stages -----------------------------------------------------------------------------

    def run(self, original: Variant, variants: Sequence[Variant]) -> TuneResult:
        """The whole search; ``original`` is the model as given (the defaults serve it)."""
        result = self.result
        self.started = self.clock() if not self.started else self.started
        if self.settings.budget_s < self.point_cost_s:
            raise OptionError(
                f"--budget-min {self.settings.budget_s / 60:g} is too small to measure anything: one "
                f"configuration under load at {len(self.settings.concurrencies)} concurrency level(s) takes "
                f"{self.point_cost_s:g} s; give at least --budget-min {_minutes(4 * self.point_cost_s)}"
            )
        self._variants = {v.report.name: v for v in [original, *variants]}
        base = SessionOptions(threads=self.settings.cores)
        defaults = ServerSettings()
        try:
            kept = self.variants_alone(original, variants, base)
            result.defaults = self.point(original, base, defaults, "defaults")
            result.points.append(result.defaults)
            self.score(result.defaults)
            finalists = [(v, self.session_options(v, base)) for v in kept]
            for variant, options in finalists:
                self.server_settings(variant, options)
        except BudgetSpent as spent:
            result.budget_spent = True
            result.notes.append(
                f"the budget ({self.settings.budget_s / 60:g} min) ran out before: {spent}; chose among "
                f"the {len(result.points)} point(s) measured (a larger --budget-min continues from the cache)"
            )
        if result.defaults is None:
            raise OptionError(
                f"--budget-min {self.settings.budget_s / 60:g} ran out before even the defaults were "
                f"measured (the variants took {self.spent():.0f} s); give a larger --budget-min"
            )
        self.choose()
        return result

    def variants_alone(
        self, original: Variant, variants: Sequence[Variant], base: SessionOptions
    ) -> list[Variant]:
        passing = [v for v in variants if v.report.passed]
        for variant in variants:
            if not variant.report.passed:
                variant.report.note = variant.report.note or "failed the accuracy gate"
        if not passing and self.settings.slo_p99_ms is None:
            original.report.kept = True  # nothing to race it against, and no floor to check
            return [original]
        contenders = {v.report.name: (v, base) for v in [original, *passing]}
        large = LARGE_BATCH if _batchable(original.model) else 1
        single, _ = self.race(contenders, 1, "race: every variant at batch 1")
        multi = single
        if large > 1:
            multi, _ = self.race(contenders, large, f"race: every variant at batch {large}")
        reference = single[original.report.name]
        for name, (variant, _) in contenders.items():
            report = variant.report
            timing = single[name]
            report.p50_ms_batch1 = timing.p50_ms
            report.samples_per_s_large = large * 1000.0 / multi[name].p50_ms
            report.speedup_batch1 = reference.p50_ms / timing.p50_ms
            rounds = zip(reference.round_p50_ms, timing.round_p50_ms, strict=False)
            report.faster_every_round = all(ref > mine for ref, mine in rounds)
            if name == original.report.name:
                continue
            large_ratio = multi[name].p50_ms < multi[original.report.name].p50_ms
            if not (report.faster_every_round or large_ratio):
                report.note = (
                    f"not faster than the original alone ({report.speedup_batch1:.2f}x at batch 1): not "
                    "combined further"
                )
        faster = [
            v
            for v in passing
            if v.report.faster_every_round
            or (large > 1 and multi[v.report.name].p50_ms < multi[original.report.name].p50_ms)
        ]

        def figure(v: Variant) -> float:
            if self.settings.objective == "latency":
                return -(v.report.p50_ms_batch1 or math.inf)
            return v.report.samples_per_s_large or 0.0

        kept = sorted(faster, key=figure, reverse=True)[: self.settings.top_variants]
        if len(kept) < self.settings.top_variants:
            kept.append(original)
        for variant in kept:
            variant.report.kept = True
        slo = self.settings.slo_p99_ms
        if slo is not None:
            fastest = min((v for v in [original, *passing]), key=lambda v: single[v.report.name].p99_ms)
            floor = single[fastest.report.name].p99_ms
            if slo < floor:
                raise OptionError(
                    f"--slo-p99-ms {slo:g} cannot be met for {original.model.name}: one request alone takes "
                    f"p99 {floor:.2f} ms with its fastest verified variant ({fastest.report.name}) here; the "
                    f"least feasible target is {math.ceil(floor * 10) / 10:g} ms"
                )
        return kept

    def session_options(self, variant: Variant, base: SessionOptions) -> SessionOptions:
        """The base options with every single change that raced faster in every round, combined."""
        batch = 1 if self.settings.objective == "latency" or not _batchable(variant.model) else LARGE_BATCH
        changes = option_changes(self.settings.cores)
        contenders = {"base": (variant, base)}
        for label, change in changes:
            contenders[label] = (variant, replace(base, **change))  # type: ignore[arg-type]
        timings, _ = self.race(contenders, batch, f"race: session options of {variant.report.name}")
        reference = timings["base"]
        winners: list[str] = []
        for label, change in changes:
            timing = timings[label]
            every = all(r > t for r, t in zip(reference.round_p50_ms, timing.round_p50_ms, strict=False))
            trial = RuntimeTrial(
                variant.report.name,
                replace(base, **change),  # type: ignore[arg-type]
                timing.p50_ms,
                reference.p50_ms / timing.p50_ms,
                every,
                kept=every and reference.p50_ms / timing.p50_ms >= MIN_OPTION_GAIN,
            )
            self.result.runtime_trials.append(trial)
            if trial.kept:
                winners.append(label)
        if not winners:
            return base
        merged: dict[str, object] = {}
        for label, change in changes:
            if label in winners:
                merged.update(change)
        combined = replace(base, **merged)  # type: ignore[arg-type]
        if len(winners) == 1:
            return combined
        best_single = max(winners, key=lambda w: reference.p50_ms / timings[w].p50_ms)
        final = {
            "base": (variant, base),
            "combined": (variant, combined),
            best_single: contenders[best_single],
        }
        again, _ = self.race(final, batch, f"race: combined session options of {variant.report.name}")
        choice = min(again, key=lambda label: again[label].p50_ms)
        return final[choice][1]

    def server_settings(self, variant: Variant, options: SessionOptions) -> None:
        cores = self.settings.cores
        splits = [n for n in (1, 2, 4) if n <= cores and cores % n == 0]
        if not _batchable(variant.model):
            for instances in splits:
                server = ServerSettings(max_batch_size=0, max_queue_delay_ms=0.0, instances=instances)
                self.add(self.point(variant, replace(options, threads=cores // instances), server, "server"))
            return
        best: TunePoint | None = None
        for instances in splits:
            threaded = replace(options, threads=max(1, cores // instances))
            curve = self.curve(variant, threaded, instances)
            for server in self.seeds(curve, instances):
                point = self.add(self.point(variant, threaded, server, "server"))
                if best is None or self.better(point, best):
                    best = point
        if best is None:
            return
        largest = max(self.settings.concurrencies)
        for size in (best.server.max_batch_size // 2, best.server.max_batch_size * 2):
            if 2 <= size <= max(2, largest) and not any(
                p.server == replace(best.server, max_batch_size=size)
                and p.runtime == best.runtime
                and p.variant == best.variant
                for p in self.result.points
            ):
                server = replace(best.server, max_batch_size=size)
                self.add(self.point(variant, best.runtime, server, "server"))

    def seeds(self, curve: list[BatchPoint], instances: int) -> list[ServerSettings]:
        """The batcher's knobs the curve suggests: the knee of its throughput, and the largest batch
        within the SLO; a queue delay of one batch's p50 (full batches under load) or none."""
        slo = self.settings.slo_p99_ms
        points = [p for p in curve if slo is None or 2 * p.p99_ms <= HEADROOM * slo] or curve[:1]
        top = max(p.samples_per_s for p in points)
        knee = min((p for p in points if p.samples_per_s * THROUGHPUT_MARGIN >= top), key=lambda p: p.batch)
        chosen = [knee, max(points, key=lambda p: p.batch)]
        seeds: list[ServerSettings] = []
        for point in dict.fromkeys(chosen):
            size = max(2, point.batch)
            budget_delay = HEADROOM * slo - 2 * point.p99_ms if slo else point.p50_ms
            longest = min(point.p50_ms, budget_delay, MAX_SEED_DELAY_MS)
            for delay in (round(max(0.0, longest), 2), 0.0):
                server = ServerSettings(max_batch_size=size, max_queue_delay_ms=delay, instances=instances)
                if server not in seeds:
                    seeds.append(server)
        return seeds[:3]

    # -- scoring and the choice -----------------------------------------------------------------

    def add(self, point: TunePoint) -> TunePoint:
        self.result.points.append(point)
        self.score(point)
        return point

    def score(self, point: TunePoint) -> None:
        defaults = self.result.defaults
        slo = self.settings.slo_p99_ms
        if defaults is None:
            return
        ratios: list[float] = []
        feasible = True
        for level in point.levels:
            base = defaults.level(level.concurrency)
            if base is None or level.requests == 0 or level.failures:
                feasible = False
                continue
            if slo is not None:
                feasible = feasible and level.p99_ms <= slo
            elif self.settings.objective == "throughput":
                feasible = feasible and level.p99_ms <= base.p99_ms * P99_TOLERANCE
            if self.settings.objective == "latency":
                feasible = feasible and level.throughput_per_s >= base.throughput_per_s / P99_TOLERANCE
                ratios.append(base.p99_ms / level.p99_ms)
            else:
                ratios.append(level.throughput_per_s / base.throughput_per_s)
        point.feasible = feasible
        point.score = math.exp(sum(math.log(r) for r in ratios) / len(ratios)) if ratios else 0.0

    def better(self, a: TunePoint, b: TunePoint) -> bool:
        return (a.feasible, a.score) > (b.feasible, b.score)

    def choose(self) -> None:
        result = self.result
        defaults = result.defaults
        assert defaults is not None
        candidates = [p for p in result.points if p.feasible and p is not defaults]
        best = max(candidates, key=lambda p: p.score, default=None)
        if best is None or best.score < MIN_GAIN:
            result.chosen, result.defaults_best = defaults, True
            result.notes.append(
                "the defaults are best: no measured configuration beat them by "
                f"{MIN_GAIN - 1:.0%} within the constraints"
                + (f" (best: {best.label}, {best.score:.2f}x)" if best else "")
            )
            return
        try:
            confirmations = self.confirm(best)
        except BudgetSpent:
            result.notes.append(
                "no budget left to measure the chosen point interleaved with the defaults; its own "
                "measurement decides"
            )
            result.chosen = best
            return
        result.confirmations = confirmations
        if self.settings.objective == "latency":
            held = all(c.p99_ratio > 1.0 for c in confirmations)
        else:
            held = all(
                c.throughput_ratio > 1.0
                and (
                    self.settings.slo_p99_ms is not None
                    or c.chosen_p99_ms <= c.default_p99_ms * P99_TOLERANCE
                )
                for c in confirmations
            )
        if self.settings.slo_p99_ms is not None:
            held = held and all(c.chosen_p99_ms <= self.settings.slo_p99_ms for c in confirmations)
        if held:
            result.chosen = best
            return
        result.chosen, result.defaults_best = defaults, True
        result.notes.append(
            f"the defaults are best: the best point ({best.label}, {best.score:.2f}x when measured alone) "
            "did not beat them at every level when measured interleaved with them"
        )

    def confirm(self, best: TunePoint) -> list[Confirmation]:
        """``best`` and the defaults in alternating blocks at each concurrency (A B A B)."""
        defaults = self.result.defaults
        assert defaults is not None
        pairs = [
            (defaults, self._variants[defaults.variant]),
            (best, self._variants[best.variant]),
        ]
        cost = 2 * CONFIRM_ROUNDS * self.point_cost_s
        if cost > self.left():
            raise BudgetSpent("the interleaved confirmation")
        measured: dict[int, list[list[TunePoint]]] = {}
        for index in range(CONFIRM_ROUNDS):
            for which, (point, variant) in enumerate(pairs):
                again = self.point(variant, point.runtime, point.server, "confirm", tag=f"confirm-{index}")
                measured.setdefault(which, []).append([again])
                self.result.points.append(again)
                self.score(again)
        confirmations = []
        for concurrency in self.settings.concurrencies:
            base_levels = [p[0].level(concurrency) for p in measured[0]]
            chosen_levels = [p[0].level(concurrency) for p in measured[1]]
            bases = [lv for lv in base_levels if lv is not None]
            chosen = [lv for lv in chosen_levels if lv is not None]
            confirmations.append(
                Confirmation(
                    concurrency=concurrency,
                    rounds=CONFIRM_ROUNDS,
                    default_throughput=_mean(lv.throughput_per_s for lv in bases),
                    chosen_throughput=_mean(lv.throughput_per_s for lv in chosen),
                    default_p99_ms=_mean(lv.p99_ms for lv in bases),
                    chosen_p99_ms=_mean(lv.p99_ms for lv in chosen),
                    throughput_ratio_per_round=[
                        c.throughput_per_s / b.throughput_per_s
                        for b, c in zip(bases, chosen, strict=False)
                        if b.throughput_per_s
                    ],
                )
            )
        return confirmations


def _minutes(seconds: float) -> str:
    """``seconds`` as minutes rounded up to a tenth, for a --budget-min suggestion."""
    return f"{math.ceil(seconds / 6) / 10:g}"


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else math.nan


def _batchable(model: Model) -> bool:
    """Whether the batcher can join requests: every input takes the batch on its first axis."""
    return bool(model.inputs) and all(spec.batch_axis == 0 for spec in model.inputs)


def _level_json(level: LoadLevel) -> dict[str, object]:
    return {
        "concurrency": level.concurrency,
        "requests": level.requests,
        "failures": level.failures,
        "seconds": level.seconds,
        "p50_ms": level.p50_ms,
        "p99_ms": level.p99_ms,
        "throughput_per_s": level.throughput_per_s,
        "batch_sizes": {str(k): v for k, v in level.batch_sizes.items()},
    }


def _level_from_json(raw: dict) -> LoadLevel:
    sizes = {int(k): int(v) for k, v in raw.get("batch_sizes", {}).items()}
    return LoadLevel(
        concurrency=int(raw["concurrency"]),
        requests=int(raw["requests"]),
        failures=int(raw["failures"]),
        seconds=float(raw["seconds"]),
        p50_ms=float(raw["p50_ms"]),
        p99_ms=float(raw["p99_ms"]),
        throughput_per_s=float(raw["throughput_per_s"]),
        batch_sizes=sizes,
    )
