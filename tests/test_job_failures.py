"""``hone run``'s report survives failure: a failing stage is marked failed with its one-line reason,
the stages that do not need it still run, both report files are written, and the CLI exits 1."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import hone
import hone.job
from hone.errors import ExecutionError, OptionError
from hone.job_types import STAGES

FACTORY = '''
import torch

def make():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3))
'''
FAST = dict(input_shapes=["1,1,6,6"], batches=[1], threads=1, budget_s=0.1, quantize=False, web=False, edge=False)


@pytest.fixture
def factory(tmp_path: Path) -> str:
    path = tmp_path / "tiny.py"
    path.write_text(FACTORY)
    return f"{path}:make"


def _fail_with(error: Exception):
    def fail(*args: object, **kwargs: object) -> None:
        raise error

    return fail


def _reports(out: Path) -> tuple[dict, str]:
    return json.loads((out / "report.json").read_text()), (out / "report.html").read_text()


@pytest.mark.parametrize(("error", "reason"), [
    (OptionError("the rewrite was refused: fix the graph"), "the rewrite was refused: fix the graph"),
    (RuntimeError("a bug in a pass\nsecond line of it"), "RuntimeError: a bug in a pass"),
])
def test_a_failed_optimize_is_reported_and_the_stages_after_it_run_on_the_loaded_model(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path, factory: str,
        error: Exception, reason: str) -> None:
    monkeypatch.setattr(hone.job, "_optimize", _fail_with(error))
    with caplog.at_level(logging.DEBUG, logger="hone.job"):
        report = hone.run(factory, out_dir=tmp_path / "out", **FAST)
    statuses = {s.name: (s.status, s.message) for s in report.stages}
    assert [s.name for s in report.stages] == list(STAGES)
    assert statuses["optimize"] == ("failed", reason)
    assert [statuses[name][0] for name in ("load", "verify", "profile", "bench", "serve", "ship-serve")] == ["ok"] * 6
    assert not report.passed and report.optimize is None
    assert [c.variant for c in report.bench.configs] == ["torch-eager", "ort-disabled", "ort-all"]
    assert report.shipped.label == report.serve.artifact == report.serve_repository.artifact == "ort-all"
    data, page = _reports(tmp_path / "out")
    assert data["passed"] is False
    assert next(s for s in data["stages"] if s["name"] == "optimize") == {
        "name": "optimize", "status": "failed", "seconds": pytest.approx(0, abs=5), "message": reason}
    assert "FAILED" in page and reason in page
    traced = [r for r in caplog.records if r.name == "hone.job" and "optimize" in r.getMessage()]
    assert traced and bool(traced[0].exc_info) == (not isinstance(error, OptionError))  # traceback: bugs only


def test_a_failed_load_skips_every_later_stage_and_still_writes_both_reports(tmp_path: Path) -> None:
    report = hone.run(str(tmp_path / "missing.onnx"), out_dir=tmp_path / "out", **FAST)
    load, *rest = report.stages
    assert load.status == "failed" and "missing.onnx" in load.message
    assert [s.name for s in rest] == list(STAGES[1:])
    assert {(s.status, s.message) for s in rest} == {("skipped", "needs the loaded model, and load failed")}
    data, page = _reports(tmp_path / "out")
    assert data["stages"][0]["status"] == "failed" and data["info"] is None
    assert "missing.onnx" in page and "FAILED" in page


def test_the_cli_writes_both_reports_before_it_exits_non_zero(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                             factory: str) -> None:
    from hone.cli import app

    monkeypatch.setattr(hone.job, "_bench", _fail_with(RuntimeError("the race broke")))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", factory, "--input-shape", "1,1,6,6", "--out", str(out), "--batch", "1",
                                      "--threads", "1", "--budget-s", "0.1", "--no-quantize", "--no-web", "--no-edge"])
    assert result.exit_code == 1, result.output
    assert "bench: RuntimeError: the race broke" in result.output
    data, page = _reports(out)
    statuses = {s["name"]: s["status"] for s in data["stages"]}
    assert statuses["bench"] == "failed" and statuses["serve"] == statuses["ship-serve"] == "ok"
    assert data["shipped"]["label"] == "ort-all" and "no bench result (the bench stage failed)" in data["shipped"]["reason"]
    assert "RuntimeError: the race broke" in page


def test_chromium_that_does_not_start_fails_the_web_stage_and_keeps_the_bundle(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, factory: str) -> None:
    from hone.export import browser

    reason = "Chromium did not start in 2 attempts of up to 180 s each (attempt 1: Timeout; attempt 2: Timeout)"
    monkeypatch.setattr(browser, "open_bundle", _fail_with(ExecutionError(reason)))
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    report = hone.run(factory, out_dir=tmp_path / "out", **{**FAST, "web": True}, serve=False)
    web = report.stage("web")
    assert (web.status, web.message) == ("failed", f"the page did not run: {reason}")
    assert (tmp_path / "out" / "web" / "index.html").is_file() and report.web.size_bytes > 0
    data, page = _reports(tmp_path / "out")
    assert data["web"]["page"] is None and data["web"]["page_note"] == web.message
    assert "id='web'" in page and "did not start in 2 attempts" in page
