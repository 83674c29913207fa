"""Web bundles of resnet18 and minilm in a real browser: Debian's Chromium driven by Playwright, the
bundle served by hone's own server on 127.0.0.1. WebGPU here is SwiftShader (software), which the
page must say; WASM is the fallback when WebGPU is off. Outputs are compared with native
onnxruntime on the CPU in this process, not only with what the bundle carries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import hone
from hone.export.browser import open_bundle
from hone.export.web import export_web
from hone.export.web_server import WebServer
from hone.runtime import Session

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MODELS = ("resnet18", "minilm")
RUNS = 2  # timed runs per page: the numbers are for benchmarks/web.py, not for tests


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[str, Path]]]:
    """Each model exported once and served for the whole module: name -> (url, folder)."""
    servers, served = [], {}
    try:
        for name in MODELS:
            folder = tmp_path_factory.mktemp("web") / name
            export_web(hone.load(name), folder, runs=RUNS)
            server = WebServer(folder).start()
            servers.append(server)
            served[name] = (server.url, folder)
        yield served
    finally:
        for server in servers:
            server.close()


def native_outputs(name: str, folder: Path) -> list[np.ndarray]:
    """The source model on native onnxruntime (CPU), fed the bundle's sample."""
    manifest = json.loads((folder / "manifest.json").read_text())
    feeds = {t["name"]: np.frombuffer((folder / t["file"]).read_bytes(), dtype=t["dtype"]).reshape(t["shape"])
             for t in manifest["sample"]["inputs"]}
    return Session(hone.load(name)).run(feeds)


def assert_matches_native(result: dict, native: np.ndarray, *, tolerance: float) -> None:
    output = np.asarray(result["output"], dtype=np.float64)
    reference = native.astype(np.float64).ravel()
    assert output.shape == reference.shape
    scale = max(1.0, float(np.abs(reference).max()))
    assert float(np.abs(output - reference).max()) <= tolerance * scale
    cosine = float(output @ reference / (np.linalg.norm(output) * np.linalg.norm(reference)))
    assert cosine > 0.9999


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("ep", ["webgpu", "wasm"])
def test_the_page_matches_native_onnxruntime_on_each_provider(bundles, name: str, ep: str, tmp_path: Path) -> None:
    url, folder = bundles[name]
    run = open_bundle(f"{url}?ep={ep}&runs={RUNS}", screenshot=tmp_path / "page.png")
    assert run.title == "DONE", (run.title, run.console[-5:])
    result = run.result
    assert result["provider"] == ep and result["requested_provider"] == ep
    assert result["output_name"] == json.loads((folder / "manifest.json").read_text())["outputs"][0]["name"]
    assert_matches_native(result, native_outputs(name, folder)[0], tolerance=2e-3 if ep == "webgpu" else 1e-4)
    assert result["max_abs_error_vs_native"] < 1e-2
    assert result["median_ms"] > 0 and result["first_run_ms"] > 0 and result["session_ms"] > 0
    assert len(result["times_ms"]) == RUNS
    assert result["cross_origin_isolated"] is True  # the server's headers: WASM threads allowed
    if name == "minilm":
        assert result["tokenizer_matches_sample"] is True
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_software_webgpu_is_reported_as_a_fallback_adapter_and_never_as_gpu(bundles) -> None:
    url, _ = bundles["resnet18"]
    run = open_bundle(f"{url}?runs=1")
    assert run.title == "DONE"
    result = run.result
    assert result["provider"] == "webgpu" and result["fallback_reason"] is None
    adapter = result["adapter"]
    assert adapter["available"] is True and adapter["isFallbackAdapter"] is True
    assert "software adapter: not GPU speed" in run.summary


def test_without_webgpu_the_page_falls_back_to_wasm_and_says_why(bundles) -> None:
    url, folder = bundles["resnet18"]
    run = open_bundle(f"{url}?runs=1", webgpu=False)
    assert run.title == "DONE", run.console[-5:]
    result = run.result
    assert result["provider"] == "wasm" and result["requested_provider"] is None
    assert result["adapter"]["available"] is False and result["adapter"]["reason"]
    assert result["fallback_reason"].startswith("webgpu (model.onnx): ")
    assert_matches_native(result, native_outputs("resnet18", folder)[0], tolerance=1e-4)


def test_forcing_webgpu_without_webgpu_is_an_error_the_page_reports(bundles) -> None:
    url, _ = bundles["resnet18"]
    run = open_bundle(f"{url}?ep=webgpu&runs=1", webgpu=False)
    assert run.title.startswith("ERROR: no execution provider could load the model (webgpu (model.onnx): ")
    assert run.result["error"] == run.title.removeprefix("ERROR: ")


def test_the_js_api_runs_other_inputs_like_native_onnxruntime(bundles) -> None:
    url, folder = bundles["resnet18"]
    image = np.random.default_rng(7).standard_normal((1, 3, 224, 224)).astype(np.float32)
    script = f"""(async () => {{
        const data = new Float32Array({json.dumps(image.ravel().round(4).tolist())});
        const out = await hone.run({{input: {{data, dims: [1, 3, 224, 224]}}}});
        const first = Object.values(out)[0];
        return {{dims: first.dims, data: Array.from(first.data)}};
    }})()"""
    input_name = json.loads((folder / "manifest.json").read_text())["inputs"][0]["name"]
    run = open_bundle(f"{url}?ep=wasm&runs=1", evaluate=script.replace("{input:", f"{{{json.dumps(input_name)}:"))
    assert run.title == "DONE"
    expected = Session(hone.load("resnet18")).run({input_name: image.round(4)})[0]
    got = np.asarray(run.result["evaluated"]["data"], dtype=np.float32).reshape(run.result["evaluated"]["dims"])
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


TRICKY_SENTENCES = [
    "Hello, world!",
    "Crème brûlée à la Café DU Monde... naïve résumé",
    "Tokenizers split unbelievably long words: antidisestablishmentarianism.",
    "Numbers 3.14159 and emails like a.b@example.com; tabs\tand\nnewlines",
    "中文字符 mixed with English",
    "emoji 🙂 and ✓ marks, quotes “like these” and 'these'",
    "x" * 120,
    "",
]


def test_the_page_tokenizer_matches_the_tokenizers_library(bundles) -> None:
    from hone.zoo import minilm

    url, _ = bundles["minilm"]
    script = f"{json.dumps(TRICKY_SENTENCES)}.map((s) => hone.tokenize(s).input_ids)"
    run = open_bundle(f"{url}?ep=wasm&runs=1", evaluate=script)
    assert run.title == "DONE"
    for sentence, ids in zip(TRICKY_SENTENCES, run.result["evaluated"], strict=True):
        expected = minilm.tokenize([sentence])["input_ids"][0].tolist()
        assert ids == expected, sentence


def test_image_preprocessing_in_the_page_matches_numpy(bundles) -> None:
    url, folder = bundles["resnet18"]
    pixels = np.random.default_rng(3).integers(0, 256, size=(224, 224, 4), dtype=np.uint8)
    pixels[..., 3] = 255  # opaque: canvas stores premultiplied alpha
    script = f"""(() => {{
        const image = new ImageData(new Uint8ClampedArray({json.dumps(pixels.ravel().tolist())}), 224, 224);
        const tensor = hone.imageToTensor(image);
        return {{dims: tensor.dims, data: Array.from(tensor.data)}};
    }})()"""
    run = open_bundle(f"{url}?ep=wasm&runs=1", evaluate=script)
    assert run.title == "DONE"
    prep = json.loads((folder / "manifest.json").read_text())["preprocessing"]
    expected = ((pixels[..., :3] / 255.0 - prep["mean"]) / prep["std"]).transpose(2, 0, 1)[None]
    got = np.asarray(run.result["evaluated"]["data"]).reshape(run.result["evaluated"]["dims"])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_an_fp16_bundle_uses_float32_on_an_adapter_without_shader_f16_and_says_so(tmp_path: Path) -> None:
    """SwiftShader has no shader-f16, so float16 shaders cannot run here: the page must notice, run the
    float32 model on WebGPU instead and say so, rather than fail or fall back to WASM."""
    folder = tmp_path / "digits-fp16"
    result = export_web(hone.load("digits_cnn"), folder, fp16=True, runs=1)
    assert result.manifest.fp16 is not None and result.manifest.fp16.kept, result.manifest.fp16
    assert result.manifest.models == {"webgpu": "model.fp16.onnx", "wasm": "model.onnx"}
    native = native_outputs("digits_cnn", folder)[0]
    with WebServer(folder) as server:
        run = open_bundle(f"{server.url}?ep=webgpu&runs=1")
    assert run.title == "DONE", (run.title, run.console[-5:])
    assert run.result["adapter"]["shaderF16"] is False
    assert run.result["provider"] == "webgpu" and run.result["model_file"] == "model.onnx"
    assert run.result["notes"] == ["model.fp16.onnx skipped: the WebGPU adapter has no shader-f16, float32 runs instead"]
    assert "no shader-f16" in run.summary
    assert_matches_native(run.result, native, tolerance=2e-3)
