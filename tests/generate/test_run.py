"""`hone run` on a generative model: its own stages, the report, the shipped decoder."""

from __future__ import annotations

import json
from pathlib import Path

from tests.generate import decoders

from hone.generate.decoder import is_generative
from hone.job import run
from hone.model import Model, load_onnx_file
from hone.report.html import render_html


def test_run_on_tiny_gpt_checks_quantizes_load_tests_and_ships(tiny_gpt: Model, tmp_path: Path) -> None:
    report = run(tiny_gpt, out_dir=tmp_path / "out", threads=2)
    statuses = {s.name: s.status for s in report.stages}
    assert statuses == {
        "load": "ok", "verify": "ok", "optimize": "ok", "quantize": "ok", "serve": "ok", "ship": "ok",
        "web": "skipped", "edge": "skipped",
    }  # fmt: skip
    generated = report.generate
    assert generated is not None and generated.cache_check is not None and generated.cache_check.equal
    assert generated.quantize is not None and [c.name for c in generated.quantize.candidates] == [
        "int4-rtn",
        "int4-hqq",
    ]
    assert generated.shipped == generated.quantize.kept  # float unless a candidate won the race
    assert report.optimize is not None and report.optimize.nodes_after < report.optimize.nodes_before
    test = generated.load_test
    assert test is not None and [level.concurrency for level in test.levels] == [1, 8]
    for level in test.levels:
        assert level.requests == level.concurrency * 4 and level.output_tokens > 0
        assert 0 < level.ttft_p50_ms <= level.ttft_p99_ms
    assert test.leaked_tokens == 0
    shipped = load_onnx_file(Path(generated.shipped_path))
    assert is_generative(shipped)
    assert any(n.op_type == "MatMulNBits" for n in shipped.ir.graph) == (generated.shipped != "float")
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["generate"]["quantize"]["kept"] == generated.shipped
    page = render_html(report)
    assert "Generative model" in page and "could not be rendered" not in page


def test_a_factory_without_a_tokenizer_fails_only_the_quantize_stage(tmp_path: Path) -> None:
    factory = f"{Path(decoders.__file__)}:llama"
    report = run(factory, out_dir=tmp_path / "out", threads=2, serve=False)
    statuses = {s.name: s.status for s in report.stages}
    assert statuses["load"] == statuses["verify"] == statuses["ship"] == "ok"
    quantize = report.stage("quantize")
    assert quantize is not None and quantize.status == "failed"
    assert "carries no tokenizer" in quantize.message and "\n" not in quantize.message
    assert is_generative(load_onnx_file(tmp_path / "out" / "generate" / "model.onnx"))
