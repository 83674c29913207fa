"""The web target without a browser: the bundle's files and manifest, the sample and native outputs it
carries, the placement check on hand-built graphs, the static server's headers, and the refusals.
The browser runs are in test_web_browser.py."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import hone
from hone.errors import OptionError, OutputExistsError
from hone.export import webgpu_ops
from hone.export.placement import webgpu_placement
from hone.export.types import WebResult
from hone.export.web import ORT_WEB_FILES, ORT_WEB_VERSION, export_web
from hone.export.web_server import ISOLATION_HEADERS, WebServer
from hone.results import to_jsonable

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, WebResult]:
    folder = tmp_path_factory.mktemp("web") / "digits"
    result = hone.export("digits_cnn", str(folder), target="web")
    assert isinstance(result, WebResult)
    return folder, result


def read_sample(folder: Path, tensor: dict) -> np.ndarray:
    return np.frombuffer((folder / tensor["file"]).read_bytes(), dtype=np.dtype(tensor["dtype"]).newbyteorder("<")).reshape(tensor["shape"])


def test_the_pinned_onnxruntime_web_version_is_the_same_everywhere() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^ORT_WEB_VERSION := (\S+)$", makefile, re.M).group(1) == ORT_WEB_VERSION
    assert webgpu_ops.ORT_WEB_VERSION == ORT_WEB_VERSION


def test_the_bundle_holds_the_page_the_runtime_the_model_and_a_manifest(digits_bundle) -> None:
    folder, result = digits_bundle
    files = set(result.files)
    assert {"index.html", "hone.mjs", "preprocess.mjs", "model.onnx", "manifest.json"} <= files
    assert {f"ort/{name}" for name in ORT_WEB_FILES} <= files
    assert not any(name.endswith(".map") for name in files), "only the files the page needs are copied"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest == to_jsonable(result.manifest)
    assert manifest["ort_web_version"] == ORT_WEB_VERSION
    assert manifest["models"] == {"webgpu": "model.onnx", "wasm": "model.onnx"}
    assert manifest["preprocessing"]["kind"] == "image"
    raw = sum((folder / name).stat().st_size for name in files)
    assert manifest["size_bytes"] == raw and 0 < manifest["gzip_bytes"] < raw
    onnx.checker.check_model(str(folder / "model.onnx"), full_check=True)


def test_the_page_loads_everything_from_the_bundle_and_nothing_from_outside(digits_bundle) -> None:
    folder, _ = digits_bundle
    for name in ("index.html", "hone.mjs", "preprocess.mjs"):
        text = (folder / name).read_text()
        assert not re.search(r"https?://", text.replace("http://127.0.0.1", "")), f"{name} names an outside URL"
    assert "from './ort/ort.webgpu.min.mjs'" in (folder / "hone.mjs").read_text()


def test_the_sample_carries_native_onnxruntime_outputs_of_the_bundled_model(digits_bundle) -> None:
    folder, result = digits_bundle
    manifest = json.loads((folder / "manifest.json").read_text())
    feeds = {t["name"]: read_sample(folder, t) for t in manifest["sample"]["inputs"]}
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    outputs = session.run(None, feeds)
    for expected, actual in zip(manifest["sample"]["expected"], outputs, strict=True):
        np.testing.assert_allclose(read_sample(folder, expected), actual, rtol=1e-5, atol=1e-6)


def test_the_web_model_has_standard_ops_only_and_answers_like_the_source_model(digits_bundle) -> None:
    from hone.runtime import Session

    folder, result = digits_bundle
    assert result.optimize is not None and result.optimize.verified
    model = onnx.load(str(folder / "model.onnx"))
    assert {opset.domain for opset in model.opset_import} <= {"", "ai.onnx"}
    manifest = json.loads((folder / "manifest.json").read_text())
    feeds = {t["name"]: read_sample(folder, t) for t in manifest["sample"]["inputs"]}
    source_outputs = Session(hone.load("digits_cnn")).run(feeds)
    for expected, actual in zip(manifest["sample"]["expected"], source_outputs, strict=True):
        np.testing.assert_allclose(read_sample(folder, expected), actual, rtol=1e-4, atol=1e-5)


def test_a_non_empty_folder_is_refused_and_left_as_it_was_without_force(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="is not empty; pass --force"):
        export_web(hone.load("digits_cnn"), folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_force_replaces_the_folder_with_a_fresh_bundle(tmp_path: Path) -> None:
    folder = tmp_path / "again"
    folder.mkdir()
    (folder / "stale.txt").write_text("old")
    export_web(hone.load("digits_cnn"), folder, force=True)
    assert not (folder / "stale.txt").exists() and (folder / "index.html").is_file()


def test_fp16_keeps_a_float16_model_for_webgpu_only_when_it_answers_like_float32(tmp_path: Path) -> None:
    result = export_web(hone.load("digits_cnn"), tmp_path / "half", fp16=True)
    check = result.manifest.fp16
    assert check is not None and check.min_cosine > 0.99
    if check.kept:
        assert result.manifest.models == {"webgpu": "model.fp16.onnx", "wasm": "model.onnx"}
        half = onnx.load(str(tmp_path / "half" / "model.fp16.onnx"))
        assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in half.graph.initializer)
    else:
        assert result.manifest.models["webgpu"] == "model.onnx" and "not kept" in check.reason


def placement_of(tmp_path: Path, text: str):
    path = tmp_path / "m.onnx"
    onnx.save(onnx.parser.parse_model(text), path)
    return webgpu_placement(hone.load(str(path)))


def test_placement_puts_every_node_of_a_supported_graph_on_webgpu(tmp_path: Path) -> None:
    report = placement_of(tmp_path, """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4] x, float[4, 3] w) => (float[1, 3] y) { h = MatMul(x, w) y = Relu(h) }""")
    assert (report.nodes, report.webgpu_nodes, report.cpu) == (2, 2, [])
    assert "all 2 nodes" in report.summary()


def test_placement_names_an_op_the_webgpu_provider_lacks(tmp_path: Path) -> None:
    missing = next(op for op in ("Det", "StringNormalizer", "Hardmax", "MaxUnpool", "Mish", "TfIdfVectorizer")
                   if ("", op) not in webgpu_ops.WEBGPU_KERNELS)
    report = placement_of(tmp_path, f"""
        <ir_version: 8, opset_import: ["" : 18]>
        g (float[2, 2] x) => (float y) {{ y = {missing}(x) }}""" if missing == "Det" else f"""
        <ir_version: 8, opset_import: ["" : 18]>
        g (float[2, 2] x) => (float[2, 2] y) {{ y = {missing}(x) }}""")
    assert report.webgpu_nodes == 0
    assert [(g.op_type, g.nodes, g.reason) for g in report.cpu] == [(missing, 1, "no WebGPU kernel")]
    assert f"{missing} x1" in report.summary()


def test_placement_names_an_input_type_outside_the_kernel_constraint(tmp_path: Path) -> None:
    op, types = next((op, types) for (domain, op), types in sorted(webgpu_ops.WEBGPU_TYPES.items())
                     if domain == "" and op in ("Relu", "Sigmoid", "Exp", "Tanh", "Softmax") and "double" not in types)
    report = placement_of(tmp_path, f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (double[2, 2] x) => (double[2, 2] y) {{ y = {op}(x) }}""")
    assert [(g.op_type, g.reason.split(";")[0]) for g in report.cpu] == [(op, "double input")]


def test_the_server_sends_isolation_headers_and_module_and_wasm_types(digits_bundle) -> None:
    folder, _ = digits_bundle
    with WebServer(folder) as server:
        assert server.url.startswith("http://127.0.0.1:")
        for path, mime in (("", "text/html"), ("hone.mjs", "text/javascript"),
                           ("ort/ort-wasm-simd-threaded.asyncify.wasm", "application/wasm"),
                           ("manifest.json", "application/json")):
            with urllib.request.urlopen(server.url + path) as response:
                assert response.headers["Content-Type"].startswith(mime), path
                for name, value in ISOLATION_HEADERS.items():
                    assert response.headers[name] == value
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.url + "../../etc/passwd")
        assert missing.value.code == 404


def test_the_server_refuses_a_folder_that_is_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="has no index.html"):
        WebServer(tmp_path)


def test_the_cli_exports_a_web_bundle_and_says_how_to_open_it(cli, tmp_path: Path) -> None:
    done = cli("export", "digits_cnn", "--target", "web", "-o", str(tmp_path / "b"))
    assert done.exit_code == 0, done.stderr
    assert "hone serve-web" in done.stdout and "WebGPU placement" in done.stdout
    assert (tmp_path / "b" / "index.html").is_file()


@pytest.mark.parametrize(("args", "message"), [
    (("export", "digits_cnn", "--target", "onnx", "--fp16", "-o", "x.onnx"), "--fp16 applies to --target web only"),
    (("export", "digits_cnn", "--target", "web", "--budget", "top1=1", "-o", "x"), "apply to --target edge only"),
    (("serve-web", "does-not-exist"), "is not a folder"),
])
def test_bad_web_options_are_one_error_line(cli, tmp_path: Path, monkeypatch, args, message) -> None:
    monkeypatch.chdir(tmp_path)
    done = cli(*args)
    assert done.exit_code == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], done.stderr


ODD_NAMES_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
odd (float[1, 4] "a/b", float[1, 4] "../in") => (float[1, 4] "../evil", float[1, 4] "x/y/z") {
    "../evil" = Add("a/b", "../in")
    "x/y/z" = Relu("a/b")
}
"""


def test_tensor_names_with_slashes_and_dots_become_numbered_sample_files_inside_the_bundle(tmp_path: Path) -> None:
    path = tmp_path / "odd.onnx"
    onnx.save(onnx.parser.parse_model(ODD_NAMES_TEXT), path)
    folder = tmp_path / "deep" / "bundle"
    result = export_web(hone.load(str(path)), folder, optimize=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    sample = manifest["sample"]
    assert [(t["name"], t["file"]) for t in sample["inputs"]] == [
        ("a/b", "sample/input_0.bin"), ("../in", "sample/input_1.bin")]
    assert [(t["name"], t["file"]) for t in sample["expected"]] == [
        ("../evil", "sample/output_0.bin"), ("x/y/z", "sample/output_1.bin")]
    assert sorted(p.name for p in (folder / "sample").iterdir()) == [
        "input_0.bin", "input_1.bin", "output_0.bin", "output_1.bin"]
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["bundle"], "nothing written outside"
    assert not (tmp_path / "evil.bin").exists() and not (folder / "evil.bin").exists()
    assert all(f.startswith(("sample/", "ort/")) or "/" not in f for f in result.files)
    feeds = {t["name"]: read_sample(folder, t) for t in sample["inputs"]}
    np.testing.assert_allclose(read_sample(folder, sample["expected"][0]), feeds["a/b"] + feeds["../in"])
    np.testing.assert_allclose(read_sample(folder, sample["expected"][1]), np.maximum(feeds["a/b"], 0))
    page = (folder / "hone.mjs").read_text()
    assert "fetchOk(`./${spec.file}`)" in page, "the page reads sample files by the manifest's file, not by name"
