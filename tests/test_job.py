"""``hone run``: the end-to-end job writes report.json and report.html, ships every target (a model
repository, a web bundle, an edge bundle), and its report opens in a browser."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import hone
from hone.errors import OutputExistsError
from hone.job_types import STAGES

FACTORY = '''
import torch

def make():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3))
'''


@pytest.fixture(scope="module")
def run_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    folder = tmp_path_factory.mktemp("run")
    factory = folder / "tiny.py"
    factory.write_text(FACTORY)
    events: list[tuple[str, str]] = []
    report = hone.run(
        f"{factory}:make",
        input_shapes=["1,1,6,6"],
        out_dir=folder / "out",
        batches=[1, 4],
        threads=1,
        budget_s=0.3,
        progress=lambda stage, event, detail: events.append((stage, event)),
    )
    report.events = events  # type: ignore[attr-defined]
    return folder / "out", report


def test_the_job_runs_every_stage_in_order_and_reports_progress(run_out) -> None:
    _, report = run_out
    assert [s.name for s in report.stages] == list(STAGES) == [
        "load", "verify", "profile", "optimize", "quantize", "bench", "serve", "ship-serve", "web", "edge"]
    assert all(s.status == "ok" for s in report.stages), report.stages
    assert ("quantize", "done") in report.events
    assert ("load", "start") in report.events and ("bench", "done") in report.events
    assert "threads" not in " ".join(report.defaults_taken)  # given explicitly


def test_the_json_report_holds_every_stage_result(run_out) -> None:
    out, _ = run_out
    data = json.loads((out / "report.json").read_text())
    assert data["passed"] is True
    assert data["info"]["op_counts"]["BatchNormalization"] == 1
    pairs = [(c["reference"], c["candidate"]) for c in data["verify"]["comparisons"]]
    assert pairs == [("ort-disabled", "ort-all"), ("torch-eager", "ort-all")]
    assert data["profile"]["batch"] == 1 and data["profile"]["total_macs"] > 0
    assert {n["bound"] for n in data["profile"]["nodes"]} <= {"compute", "memory", "overhead", "transfer", "sync"}
    assert data["optimize"]["nodes_after"] < data["optimize"]["nodes_before"]
    assert "fuse_conv_bn" in [p["name"] for p in data["optimize"]["passes"] if p["status"] == "applied"]
    quantized = data["quantize"]
    assert quantized["mode"] == "static" and quantized["candidates"]
    assert {c["name"] for c in quantized["candidates"]} >= {"static-qdq", "static-qoperator"}
    bench = data["bench"]
    variants = {(c["variant"], c["batch"]) for c in bench["configs"]}
    expected = ["torch-eager", "ort-disabled", "ort-all", "hone+ort-all"]
    if quantized["format"] != "float":  # kept only when it passed the gate and was measured faster
        expected.append(f"hone-{quantized['format']}+ort-all")
    assert variants == {(v, b) for v in expected for b in (1, 4)}
    assert bench["baseline"] == "ort-all on the loaded model" and bench["method"] == "interleaved"
    for config in bench["configs"]:
        assert config["baseline_variant"] == "ort-all"
        assert len(config["speedup_per_round"]) == len(config["round_p50_ms"]) >= 1
    serve = data["serve"]
    assert serve["artifact"] == data["shipped"]["label"]
    assert [level["concurrency"] for level in serve["levels"]] == [1, 8]
    for level in serve["levels"]:
        assert level["requests"] > 0 and level["failures"] == 0
        assert 0 < level["p50_ms"] <= level["p99_ms"] and level["throughput_per_s"] > 0
        # every request was one sample, and every one went through some batch
        assert sum(int(size) * count for size, count in level["batch_sizes"].items()) == level["requests"]
    web = data["web"]
    assert (out / "web" / "index.html").is_file() and web["size_bytes"] > 0
    assert web["placement"]["nodes"] == web["placement"]["webgpu_nodes"] + sum(g["nodes"] for g in web["placement"]["cpu"])
    page = web["page"]  # Chromium is installed for the tests (make browser)
    assert page["provider"] == "webgpu" and page["adapter"]["isFallbackAdapter"] is True
    assert page["max_abs_error_vs_native"] < 1e-3 and page["median_ms"] > 0
    web_stage = next(stage for stage in data["stages"] if stage["name"] == "web")
    assert "nodes on WebGPU" in web_stage["message"] and "software adapter" in web_stage["message"]


def test_the_html_report_is_self_contained(run_out) -> None:
    out, _ = run_out
    page = (out / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") == 4
    assert "Profile" in page and "Recommendations" in page
    assert "id='optimize'" in page and "fuse_conv_bn" in page
    assert "http://" not in page and "https://" not in page
    assert "torch-eager" in page and "Benchmark" in page
    assert "id='serve'" in page and "concurrency" in page
    assert "id='web'" in page and "software adapter: not GPU speed" in page
    assert "id='shipped'" in page and "id='ship-serve'" in page and "id='edge'" in page
    assert "ort-all on the loaded model" in page and "speedup by round" in page


def test_the_job_refuses_to_overwrite_a_report_without_force(run_out) -> None:
    out, _ = run_out
    before = (out / "report.json").read_text()
    with pytest.raises(OutputExistsError):
        hone.run("resnet18", out_dir=out)
    assert (out / "report.json").read_text() == before


def test_the_shipped_artifact_is_faster_than_the_loaded_model_in_every_round_or_is_the_loaded_model(run_out) -> None:
    out, report = run_out
    shipped = report.shipped
    assert shipped.label in [c.variant for c in report.bench.configs if c.variant.endswith("ort-all")]
    if shipped.label == "ort-all":
        assert shipped.artifact == "loaded" and "no candidate was faster" in shipped.reason
    else:
        for batch in report.bench.batches:
            config = report.bench.config(shipped.label, batch)
            assert config.speedup_vs_baseline > 1 and min(config.speedup_per_round) > 1
        assert "faster in every round" in shipped.reason


def test_the_model_repository_loads_as_hone_serve_reads_it_and_answers(run_out) -> None:
    from hone.serve.config import load_repository
    from hone.serve.registry import ModelRegistry

    out, report = run_out
    repository = report.serve_repository
    assert repository.path == str(out / "serve") and repository.measured
    assert Path(repository.model_path) == out / "serve" / "tiny" / "1" / "model.onnx"
    config = json.loads((out / "serve" / "tiny" / "config.json").read_text())
    assert (config["max_batch_size"], config["max_queue_delay_ms"]) == (report.serve.max_batch_size,
                                                                         report.serve.max_queue_delay_ms)
    entries = load_repository(out / "serve")
    assert [(e.name, e.version, e.batch.max_batch_size) for e in entries] == [("tiny", "1", report.serve.max_batch_size)]
    # what the serve stage's bounded tuner chose (or hone serve's defaults, when they won), as served
    tuned = report.serve_tune
    assert tuned.notes[0].startswith("bounded mode:") and tuned.points and tuned.defaults is not None
    assert {p.variant for p in tuned.points} == {report.shipped.label}
    assert entries[0].session == tuned.chosen.runtime and entries[0].instances == tuned.chosen.server.instances
    assert config["session"] == tuned.chosen.runtime.to_json()
    assert tuned.defaults_best or all(c.throughput_ratio > 1.0 for c in tuned.confirmations)
    serve_stage = next(stage for stage in report.stages if stage.name == "serve")
    assert serve_stage.message.startswith("hone tune in bounded mode (")

    async def serve_one_request() -> dict[str, np.ndarray]:
        registry = ModelRegistry(lambda: entries)
        await registry.start()
        try:
            assert registry.ready and registry.names() == ["tiny"]
            served = registry.get("tiny")
            return await served.batcher.submit({"input": np.ones((1, 1, 6, 6), dtype=np.float32)})
        finally:
            await registry.stop()

    outputs = asyncio.run(serve_one_request())
    assert [value.shape for value in outputs.values()] == [(1, 3)]


def test_the_edge_bundle_is_written_as_hone_export_writes_it(run_out) -> None:
    out, report = run_out
    assert sorted(p.name for p in (out / "edge").iterdir()) == ["manifest.json", "model.onnx", "profile.json"]
    manifest = json.loads((out / "edge" / "manifest.json").read_text())
    assert manifest["format"] == report.edge.manifest.format
    assert report.edge.profile.artifact.fits and report.edge.profile.artifact.p50_ms > 0
    edge_stage = report.stage("edge")
    assert str(out / "edge") in edge_stage.message and "1 thread p50" in edge_stage.message


def test_the_job_imports_no_renderer() -> None:
    code = "import sys, hone.job; sys.exit(any(m.startswith('hone.report') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.browser
def test_the_report_renders_in_headless_chromium(run_out) -> None:
    from playwright.sync_api import sync_playwright

    out, _ = run_out
    chromium = shutil.which("chromium")
    assert chromium, "Chromium is missing: run `make browser` (Debian package chromium)"
    requested: list[str] = []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        # A fresh profile folder is the --user-data-dir; Playwright passes it on itself.
        browser = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=chromium,
            headless=True,
            args=["--headless", "--no-sandbox", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
            viewport={"width": 1200, "height": 900},
        )
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.goto((out / "report.html").as_uri())
            page.wait_for_load_state("load")
            assert page.title().startswith("hone report")
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
            assert len(widths) == 4 and all(w > 300 for w in widths)
            assert page.locator("#profile").is_visible()
            assert page.locator("#bench").is_visible()
            page.screenshot(path=str(out / "report.png"), full_page=True)
        finally:
            browser.close()
    assert (out / "report.png").stat().st_size > 10_000
    assert all(url.startswith(("file:", "data:")) for url in requested), requested


def test_the_job_refuses_a_target_folder_in_the_way_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "out" / "serve").mkdir(parents=True)
    (tmp_path / "out" / "serve" / "old.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="serve is not empty; pass --force"):
        hone.run("no-such-model.onnx", out_dir=tmp_path / "out", web=False, edge=False)
    assert not (tmp_path / "out" / "report.json").exists()


def test_no_serve_no_web_no_edge_skip_those_stages_with_their_reasons(tmp_path: Path) -> None:
    factory = tmp_path / "tiny.py"
    factory.write_text(FACTORY)
    report = hone.run(f"{factory}:make", input_shapes=["1,1,6,6"], out_dir=tmp_path / "out", batches=[1],
                      threads=1, budget_s=0.1, quantize=False, serve=False, web=False, edge=False)
    skipped = [(s.name, s.status, s.message) for s in report.stages[-4:]]
    assert skipped == [("serve", "skipped", "not asked (--no-serve)"), ("ship-serve", "skipped", "not asked (--no-serve)"),
                       ("web", "skipped", "not asked (--no-web)"), ("edge", "skipped", "not asked (--no-edge)")]
    assert report.serve is None and report.serve_repository is None and report.passed
    assert not (tmp_path / "out" / "serve").exists() and not (tmp_path / "out" / "edge").exists()
