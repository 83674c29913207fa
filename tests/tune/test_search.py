"""hone tune's search with a fake measurer and a fake clock: deterministic choices, pruning, resume
from the cache, budget stop, bad input; and the repository round trip hone serve reads."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest

from hone.errors import OptionError, OutputExistsError, RepositoryError
from hone.serve.config import load_repository
from hone.serve.registry import _build_runner
from hone.serve.slo import BatchPoint
from hone.serve.types import LoadLevel
from hone.session_options import SessionOptions
from hone.sources import load
from hone.tune import tune
from hone.tune.cache import PointCache
from hone.tune.search import Search, SearchSettings, Variant
from hone.tune.types import TuneResult, VariantReport


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeMeasurer:
    """Latency = the variant's base ms x (1 + 0.25 (batch - 1)); a queue delay adds to every request
    of a batch that does not fill; every measurement advances the clock by what it would take."""

    def __init__(self, clock: FakeClock, base_ms: dict[int, float]) -> None:
        self.clock = clock
        self.base_ms = base_ms  # id(model) -> ms at batch 1
        self.calls = 0

    def _service(self, model: object, options: SessionOptions, batch: int) -> float:
        ms = self.base_ms[id(model)] * (1 + 0.25 * (batch - 1))
        return ms * (0.9 if not options.spinning else 1.0)

    def race(self, contenders, *, batch, seconds):
        from hone.tune.measure import Timing

        self.clock.now += seconds
        self.calls += 1
        out = {}
        for label, (model, options) in contenders.items():
            ms = self._service(model, options, batch)
            out[label] = Timing(ms, (ms, ms, ms), 30, ms * 1.2)
        return out

    def curve(self, model, options, *, instances, stop_above_ms, largest):
        self.clock.now += 1.0
        self.calls += 1
        points, batch = [], 1
        while batch <= largest:
            ms = self._service(model, options, batch)
            points.append(BatchPoint(batch, ms, ms * 1.2, 20, instances * batch * 1000 / ms))
            batch *= 2
        return points

    def serve(self, model, options, server, *, concurrency, seconds):
        self.clock.now += seconds
        self.calls += 1
        batch = max(1, min(concurrency, server.max_batch_size or 1))
        ms = self._service(model, options, batch)
        if batch < max(1, server.max_batch_size) and concurrency > 1:
            ms += server.max_queue_delay_ms
        latency = ms * max(1.0, concurrency / batch)
        throughput = concurrency * 1000.0 / latency
        return LoadLevel(concurrency, int(throughput * seconds), 0, seconds, latency, latency * 1.3, throughput)


@pytest.fixture
def models(mlp_path: Path):
    original = load(str(mlp_path))
    return original, original.clone("int8"), original.clone("slow")


def variants(models, *, int8_passed: bool = True, int8_ms: float = 0.5):
    original, int8, slow = models
    reference = Variant(VariantReport("original", "as given", passed=True, accuracy_value=1.0), original)
    faster = Variant(VariantReport("static-qdq", "int8", passed=int8_passed, accuracy_value=0.99), int8)
    slower = Variant(VariantReport("optimized", "passes", passed=True, accuracy_value=1.0), slow)
    base = {id(original): 1.0, id(int8): int8_ms, id(slow): 1.4}
    return reference, [faster, slower], base


def search(models, tmp_path: Path, *, budget_s: float = 600.0, cache: Path | None = None, slo=None, **kw):
    reference, others, base = variants(models, **kw)
    clock = FakeClock()
    measurer = FakeMeasurer(clock, base)
    settings = SearchSettings(concurrencies=(1, 8), budget_s=budget_s, seconds_per_level=1.0, cores=2, slo_p99_ms=slo)
    result = TuneResult("mlp", "throughput", slo, [1, 8], budget_s)
    points = PointCache(cache)
    found = Search(measurer, points, clock, settings, "key", result).run(reference, others)
    points.close()
    return found, measurer


def test_the_search_chooses_the_faster_verified_variant_and_batching(models, tmp_path: Path) -> None:
    result, _ = search(models, tmp_path)
    again, _ = search(models, tmp_path)
    assert result.chosen is not None and not result.defaults_best
    assert result.chosen.variant == "static-qdq"
    assert result.chosen.label == again.chosen.label  # deterministic
    assert result.chosen.runtime.spinning is False  # the option that raced faster in every round
    assert all(c.throughput_ratio > 1.0 for c in result.confirmations)
    # pruned: the variant slower alone is never served in a point
    assert {p.variant for p in result.points} <= {"original", "static-qdq"}
    slow = next(v for v in result.variants if v.name == "optimized") if result.variants else None
    assert slow is None or not slow.kept


def test_a_variant_failing_the_gate_is_not_combined(models, tmp_path: Path) -> None:
    result, _ = search(models, tmp_path, int8_passed=False)
    assert "static-qdq" not in {p.variant for p in result.points}
    assert result.chosen is not None and result.chosen.variant == "original"


def test_the_defaults_can_be_best(models, tmp_path: Path) -> None:
    # int8 no faster, and batching 8 with no delay at c<=8 is what the fake gives the defaults too
    reference, others, base = variants(models, int8_ms=1.0)
    for v in others:
        v.report.passed = False
    clock = FakeClock()

    class Flat(FakeMeasurer):
        def serve(self, model, options, server, *, concurrency, seconds):
            self.clock.now += seconds
            return LoadLevel(concurrency, 100, 0, seconds, 10.0, 12.0, 100.0)

    settings = SearchSettings(concurrencies=(1, 8), budget_s=600, seconds_per_level=1.0, cores=2)
    result = TuneResult("mlp", "throughput", None, [1, 8], 600)
    Search(Flat(clock, base), PointCache(None), clock, settings, "k", result).run(reference, others)
    assert result.defaults_best and result.chosen is result.defaults
    assert "the defaults are best" in result.line()


def test_resume_from_the_cache_continues_instead_of_starting_over(models, tmp_path: Path) -> None:
    cache = tmp_path / "tune.sqlite"
    small, first = search(models, tmp_path, budget_s=12.0, cache=cache)
    assert small.budget_spent and any("budget" in n for n in small.notes)
    assert small.chosen is not None  # chose among what it measured
    large, second = search(models, tmp_path, budget_s=600.0, cache=cache)
    assert large.cached >= small.measured  # every point of the first run read back
    assert large.measured > 0 and not large.budget_spent
    full, _ = search(models, tmp_path, budget_s=600.0)
    assert large.chosen.label == full.chosen.label
    repeat, third = search(models, tmp_path, budget_s=600.0, cache=cache)
    assert repeat.measured == 0 and third.calls == 0


def test_a_budget_too_small_to_measure_anything_is_one_line(models, tmp_path: Path) -> None:
    with pytest.raises(OptionError, match=r"too small to measure anything.*give at least --budget-min") as err:
        search(models, tmp_path, budget_s=1.0)
    assert "\n" not in str(err.value)


def test_an_slo_below_one_request_names_the_least_feasible_target(models, tmp_path: Path) -> None:
    with pytest.raises(OptionError, match=r"least feasible target is 0\.6 ms") as err:
        search(models, tmp_path, slo=0.1)
    assert "\n" not in str(err.value)
    result, _ = search(models, tmp_path, slo=50.0)
    assert result.chosen is not None
    assert all(lv.p99_ms <= 50.0 for lv in result.chosen.levels)


def test_the_repository_round_trip_serves_the_tuned_settings(mlp_path: Path, tmp_path: Path) -> None:
    clock = FakeClock()
    model = load(str(mlp_path))
    measurer = FakeMeasurer(clock, {id(model): 1.0})
    out = tmp_path / "repo"
    result = tune(
        model,
        out,
        concurrency=(1, 8),
        budget_min=10,
        seconds_per_level=1.0,
        measurer=measurer,
        clock=clock,
        use_cache=False,
        build_variants=False,
    )
    assert result.chosen is not None and (out / "tune.json").is_file()
    (entry,) = load_repository(out)
    assert entry.session == result.chosen.runtime
    assert entry.batch.max_batch_size == result.chosen.server.max_batch_size
    assert entry.instances == result.chosen.server.instances
    runner = _build_runner(entry)
    config = runner._sessions[0].config
    assert config.spinning == result.chosen.runtime.spinning
    assert runner.threads == result.chosen.runtime.threads
    with pytest.raises(OutputExistsError, match="already exists"):
        tune(model, out, measurer=measurer, clock=clock, use_cache=False, build_variants=False)


def test_a_bad_session_key_in_config_json_is_one_line(mlp_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "repo" / "m"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.onnx").write_bytes(mlp_path.read_bytes())
    (folder / "config.json").write_text('{"session": {"threads": 2, "spin": false}}')
    with pytest.raises(RepositoryError, match="unknown key.*'spin'"):
        load_repository(tmp_path / "repo")
    with pytest.raises(OptionError, match="execution_mode"):
        SessionOptions(execution_mode="fast")  # type: ignore[arg-type]
    assert math.isfinite(SessionOptions(threads=1).to_json()["threads"])  # type: ignore[arg-type]


def test_hone_tune_end_to_end_on_this_machine(cli, mlp_path: Path, tmp_path: Path) -> None:
    """The real measurer, real variants (the passes, dynamic INT8 through the gate), a short budget."""
    out = tmp_path / "repo"
    done = cli(
        "tune", str(mlp_path), "-o", str(out), "--budget-min", "0.6", "--concurrency", "1,4",
        "--seconds-per-level", "0.2", "--no-cache",
    )
    assert done.exit_code == 0, done.stderr
    assert "hone tune: mlp:" in done.stdout
    assert (out / "tune.html").read_text().count("<img") == 1
    (entry,) = load_repository(out)
    assert entry.session is not None
    import json

    data = json.loads((out / "tune.json").read_text())
    assert data["points"] and all(len(p["levels"]) == 2 for p in data["points"])
    assert {v["name"] for v in data["variants"]} >= {"original", "optimized"}


def test_hone_tune_refuses_a_budget_too_small(cli, mlp_path: Path, tmp_path: Path) -> None:
    done = cli("tune", str(mlp_path), "-o", str(tmp_path / "r"), "--budget-min", "0.01", "--no-cache")
    assert done.exit_code != 0
    assert "too small to measure anything" in done.stderr


def test_the_confirmation_is_kept_in_hand_when_the_budget_runs_out(models, tmp_path: Path) -> None:
    """A budget that stops the search early still pays for the interleaved A/B of its choice."""
    result, _ = search(models, tmp_path, budget_s=40.0)
    assert result.budget_spent
    assert result.chosen is not None
    assert not result.defaults_best and len(result.confirmations) == 2  # the int8 point, confirmed
    assert not any("no budget left to measure the chosen point" in n for n in result.notes)


def test_the_bounded_mode_tunes_only_the_serving_of_one_model(models, mlp_path: Path) -> None:
    """hone run's serve stage: no variants raced, every point on the given model under its label."""
    from hone.tune import tune_serving

    original = models[0]
    clock = FakeClock()
    measurer = FakeMeasurer(clock, {id(original): 1.0})
    result = tune_serving(
        original, budget_s=60.0, concurrency=(1, 8), seconds_per_level=1.0, cores=2, name="hone-qdq+ort-all",
        measurer=measurer, clock=clock,
    )
    assert [v.name for v in result.variants] == ["hone-qdq+ort-all"]
    assert {p.variant for p in result.points} == {"hone-qdq+ort-all"}
    assert result.chosen is not None and result.defaults is not None
    assert result.notes[0].startswith("bounded mode:")
    assert clock.now <= 60.0 + 1e-9  # the budget holds, the confirmation included
    assert result.cache_path == ""  # nothing cached: a run measures afresh
    with pytest.raises(OptionError, match="too small to measure anything"):
        tune_serving(original, budget_s=1.0, concurrency=(1, 8), seconds_per_level=1.0, cores=2,
                     measurer=FakeMeasurer(FakeClock(), {id(original): 1.0}), clock=FakeClock())


def test_int8_variants_are_read_back_not_rebuilt_on_a_second_run(mlp_path: Path, tmp_path: Path, monkeypatch) -> None:
    """Resume covers the variants too: the INT8 candidates a run built are read back from the cache."""
    variants_module = importlib.import_module("hone.tune.variants")  # hone.tune is also the function
    from hone.data import attach, feeds
    from hone.quantize.gate import Budget
    from hone.samples import SampleSet
    from hone.quantize.types import AccuracyReport

    calls: list[int] = []

    def fake_int8(original, budget, threads, clock, deadline, note):
        calls.append(1)
        verdict = AccuracyReport("agreement", "top-1 agreement", 1.0, 0.99, "agreement >= 98%", True, 10)
        return [("dynamic-s8", "INT8 dynamic", original.clone("int8"), verdict)]

    monkeypatch.setattr(variants_module, "_int8_variants", fake_int8)
    model = load(str(mlp_path))
    model = attach(model, SampleSet([feeds(model, seed=i) for i in range(8)], "data", "8 given samples"))
    cache_file = tmp_path / "tune.sqlite"
    found = []
    for _ in range(2):
        cache = PointCache(cache_file)
        _, built = variants_module.build_variants(
            model, budget=Budget(), dims={}, key="k", folder=tmp_path / "variants", cache=cache, provider="cpu",
            threads=1, clock=lambda: 0.0, deadline=1.0, note=lambda text: None,
        )
        cache.close()
        found.append([(v.report.name, v.report.cached) for v in built])
    assert calls == [1]
    assert found[0] == [("optimized", False), ("dynamic-s8", False)]
    assert found[1] == [("optimized", True), ("dynamic-s8", True)]


def test_the_variants_folder_is_trimmed_least_recently_used_first(tmp_path: Path) -> None:
    import os

    from hone.tune.variants import _trim

    files = []
    for index in range(4):
        file = tmp_path / f"v{index}.onnx"
        file.write_bytes(b"x" * 100)
        os.utime(file, (1000 + index, 1000 + index))
        files.append(file)
    _trim(tmp_path, keep={files[0]}, limit=250)
    assert [f.exists() for f in files] == [True, False, False, True]


def test_without_real_data_no_int8_variant_is_built(mlp_path: Path, tmp_path: Path, monkeypatch) -> None:
    """A gate on invented inputs cannot vouch for INT8: tune says so and builds none."""
    variants_module = importlib.import_module("hone.tune.variants")
    from hone.data import attach
    from hone.quantize.gate import Budget

    monkeypatch.setattr(variants_module, "_int8_variants", lambda *a: pytest.fail("INT8 built on invented inputs"))
    notes: list[str] = []
    cache = PointCache(None)
    _, built = variants_module.build_variants(
        attach(load(str(mlp_path))), budget=Budget(), dims={}, key="k", folder=tmp_path, cache=cache,
        provider="cpu", threads=1, clock=lambda: 0.0, deadline=1.0, note=notes.append,
    )
    assert [v.report.name for v in built] == ["optimized"]
    assert any(n.startswith("INT8 variants not tried: no real data") for n in notes)
