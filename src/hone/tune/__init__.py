"""hone tune: one measured search over the model, the runtime and the server, under an accuracy
budget and a latency target, written out as a model repository that ``hone serve`` runs as is.

``tune(model)`` attaches the data (``--data``, ``--dim``; else the zoo's, else invented inputs,
checked), builds the verified variants (``variants.py``) within a share of the budget, runs the
search (``search.py``) with the measurer (``measure.py``) through the cache (``cache.py``), and
writes ``REPO/<model>/1/model.onnx``, ``REPO/<model>/config.json`` (the batcher, the instances and
the onnxruntime session options) and ``REPO/tune.json`` (every measured point); the Pareto page
``REPO/tune.html`` is rendered by ``hone.report.tune_page`` (``hone.tune`` and the CLI write it).
Results are in ``types.py``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from hone._version import __version__
from hone.data import attach
from hone.errors import OptionError
from hone.model import Model
from hone.paths import cache_dir, ensure_writable
from hone.tune.cache import CACHE_FILE, PointCache, key_of
from hone.tune.measure import Measurer
from hone.tune.search import Progress, Search, SearchSettings
from hone.tune.types import OBJECTIVES, Objective, TunePoint, TuneResult

# Variants (quantization with its fallback) may use at most this share of the budget.
VARIANT_SHARE = 0.4
DEFAULT_CONCURRENCY = (1, 8, 32)
TUNE_JSON = "tune.json"
TUNE_HTML = "tune.html"


def tune(
    source: str | os.PathLike[str] | Model,
    out: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    dims: dict[str, int] | None = None,
    accuracy: str | None = None,
    slo_p99_ms: float | None = None,
    objective: Objective | str = "throughput",
    concurrency: Sequence[int] = DEFAULT_CONCURRENCY,
    budget_min: float = 5.0,
    seconds_per_level: float = 1.5,
    force: bool = False,
    provider: str = "cpu",
    cache: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    measurer: Measurer | None = None,
    clock: Callable[[], float] = time.perf_counter,
    progress: Progress | None = None,
    build_variants: bool = True,
    cores: int | None = None,
) -> TuneResult:
    """Search ``source``'s variants, session options and server settings; write the repository.

    ``accuracy`` is the gate's budget (``hone quantize --budget``'s syntax); ``slo_p99_ms`` bounds
    p99 at every concurrency level, else the chosen point's p99 may not be worse than the defaults'.
    ``cache`` is the SQLite file (default ``<hone cache>/tune.sqlite``); ``use_cache=False`` keeps
    nothing. ``cores`` is the thread budget split into instances x threads (default: the physical
    cores). ``measurer`` and ``clock`` are injected by tests.
    """
    from hone.quantize.gate import Budget
    from hone.runtime import default_threads
    from hone.sources import load
    from hone.tune.variants import build_variants as make_variants
    from hone.tune.variants import reference_variant

    chosen_objective = _checked_objective(objective)
    levels = _checked_concurrency(concurrency)
    if not (isinstance(budget_min, (int, float)) and math.isfinite(budget_min) and budget_min > 0):
        raise OptionError(f"--budget-min must be a positive number of minutes, got {budget_min!r}")
    if slo_p99_ms is not None and not (math.isfinite(slo_p99_ms) and slo_p99_ms > 0):
        raise OptionError(f"--slo-p99-ms must be a positive number of milliseconds, got {slo_p99_ms}")
    if seconds_per_level <= 0:
        raise OptionError(f"seconds per level must be positive, got {seconds_per_level}")
    gate_budget = Budget.parse(accuracy)
    target = Path(out)
    if target.exists() and not force:
        ensure_writable(target, force=False)  # the one refusal message of hone
    model = source if isinstance(source, Model) else load(source)
    model = attach(model, None if data is None else str(data), dims)
    started = clock()
    settings = SearchSettings(
        concurrencies=levels,
        objective=chosen_objective,
        slo_p99_ms=slo_p99_ms,
        budget_s=budget_min * 60.0,
        seconds_per_level=seconds_per_level,
        cores=cores or default_threads(),
    )
    cache_path = Path(cache) if cache is not None else cache_dir() / CACHE_FILE
    search, points = _new_search(
        model, settings, cache_path if use_cache else None, measurer, provider, clock, progress, started
    )
    result = search.result
    try:
        if settings.budget_s < search.point_cost_s:
            search.run(reference_variant(model), [])  # raises the one-line "budget too small"
        if build_variants:
            if progress is not None:
                progress("building and judging the variants", 0.0)
            reference, variants = make_variants(
                model,
                budget=gate_budget,
                dims=dict(dims or {}),
                key=search.key,
                folder=cache_dir() / "tune-variants",
                cache=points,
                provider=provider,
                threads=None,
                clock=clock,
                deadline=started + VARIANT_SHARE * settings.budget_s,
                note=result.notes.append,
            )
        else:
            reference, variants = reference_variant(model), []
        result.variants = [reference.report, *(v.report for v in variants)]
        search.run(reference, variants)
        chosen_model = next(
            (
                v.model
                for v in [reference, *variants]
                if result.chosen and v.report.name == result.chosen.variant
            ),
            model,
        )
    finally:
        _close(points, search.measurer)
    result.seconds = clock() - started
    write_repository(result, chosen_model, target, force=force)
    return result


def tune_serving(
    model: Model,
    *,
    budget_s: float,
    concurrency: Sequence[int],
    seconds_per_level: float,
    cores: int,
    provider: str = "cpu",
    name: str = "original",
    measurer: Measurer | None = None,
    clock: Callable[[], float] = time.perf_counter,
    progress: Progress | None = None,
) -> TuneResult:
    """The bounded mode ``hone run``'s serve stage uses: the session options and the server settings
    of one model already chosen (no variants are built: the run's bench chose the model), within
    ``budget_s``, nothing cached and nothing written (``write_repository`` writes the choice).
    The search's own stages and its interleaved confirmation against the defaults are unchanged;
    ``name`` labels the model in the result (``hone run`` gives the shipped artifact's label)."""
    from hone.tune.variants import reference_variant

    levels = _checked_concurrency(concurrency)
    settings = SearchSettings(
        concurrencies=levels,
        budget_s=budget_s,
        seconds_per_level=seconds_per_level,
        race_seconds=min(SearchSettings.race_seconds, 2 * seconds_per_level),
        cores=cores,
    )
    started = clock()
    search, points = _new_search(model, settings, None, measurer, provider, clock, progress, started)
    try:
        reference = reference_variant(model, name)
        search.result.variants = [reference.report]
        result = search.run(reference, [])
    finally:
        _close(points, search.measurer)
    result.seconds = clock() - started
    result.notes.insert(
        0,
        f"bounded mode: session options and server settings of {model.name} only, within "
        f"{budget_s:.0f} s (hone tune also searches the model's variants)",
    )
    return result


def _new_search(
    model: Model,
    settings: SearchSettings,
    cache_path: Path | None,
    measurer: Measurer | None,
    provider: str,
    clock: Callable[[], float],
    progress: Progress | None,
    started: float,
) -> tuple[Search, PointCache]:
    points = PointCache(cache_path)
    result = TuneResult(
        model=model.name,
        objective=settings.objective,
        slo_p99_ms=settings.slo_p99_ms,
        concurrencies=list(settings.concurrencies),
        budget_s=settings.budget_s,
        cache_path=str(cache_path) if cache_path is not None else "",
    )
    key = _fingerprint(model, provider, settings.cores)
    if measurer is None:
        from hone.tune.measure import OrtMeasurer

        measurer = OrtMeasurer(provider)
    return Search(measurer, points, clock, settings, key, result, progress, started=started), points


def _close(points: PointCache, measurer: Measurer) -> None:
    points.close()
    close = getattr(measurer, "close", None)
    if callable(close):
        close()


def write_repository(result: TuneResult, model: Model, out: Path, *, force: bool) -> Path:
    """``out/<model>/1/model.onnx``, ``config.json`` and ``tune.json``, read back as ``hone serve out``
    reads them (``tune.html`` is the report's: ``hone.tune`` and the CLI write it)."""
    from hone.results import to_jsonable
    from hone.serve.config import CONFIG_FILE, MODEL_FILE, load_repository, served_name

    assert result.chosen is not None
    name = served_name(model.name)
    folder = out / name
    model_file = folder / "1" / MODEL_FILE
    model.save(model_file, force=force)
    (folder / CONFIG_FILE).write_text(
        json.dumps(served_config(result.chosen), indent=2) + "\n", encoding="utf-8"
    )
    result.repository = str(out)
    (out / TUNE_JSON).write_text(json.dumps(to_jsonable(result), indent=2) + "\n", encoding="utf-8")
    load_repository(out)  # the layout and config.json, validated as `hone serve` does
    return out


def served_config(point: TunePoint) -> dict[str, object]:
    """The chosen point as a repository model's ``config.json``."""
    server = point.server
    config: dict[str, object] = {
        "max_batch_size": server.max_batch_size,
        "max_queue_delay_ms": server.max_queue_delay_ms,
        "instances": server.instances,
        "session": point.runtime.to_json(),
    }
    if server.preferred_batch_sizes:
        config["preferred_batch_sizes"] = list(server.preferred_batch_sizes)
    return config


def _fingerprint(model: Model, provider: str, cores: int) -> str:
    """What every measurement of this search depends on: the model's bytes, its samples, the machine
    and hone's version."""
    from hone.bench.compare import machine_summary

    digest = hashlib.sha256()
    source = model.onnx_source()
    digest.update(Path(source).read_bytes() if isinstance(source, str) else source)
    samples = model.samples
    if samples is not None:
        digest.update(samples.description.encode())
        for sample in samples.samples[:64]:
            for name in sorted(sample):
                digest.update(name.encode())
                digest.update(sample[name].tobytes())
    digest.update(json.dumps(model.default_dims, sort_keys=True).encode())
    return key_of(digest.hexdigest(), provider, cores, machine_summary(), __version__)


def _checked_objective(objective: str) -> Objective:
    for known in OBJECTIVES:
        if objective == known:
            return known
    raise OptionError(f"--objective {objective!r} is unknown; choose one of: {', '.join(OBJECTIVES)}")


def _checked_concurrency(levels: Sequence[int]) -> tuple[int, ...]:
    values = tuple(levels)
    if not values or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in values):
        raise OptionError(f"--concurrency must be whole numbers of at least 1, got {list(values)}")
    return tuple(sorted(set(values)))
