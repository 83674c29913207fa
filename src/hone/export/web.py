"""The web target: a self-contained folder that runs the model in a browser with onnxruntime-web, on
WebGPU where the browser offers it and on WASM (CPU) otherwise.

``export_web(model, DIR)`` writes:

- ``index.html``, ``hone.mjs``, ``preprocess.mjs``: the page and its modules (from ``web_assets/``).
  The page loads onnxruntime-web from ``ort/``, creates a session (WebGPU first, WASM when WebGPU
  is unavailable, or the provider ``?ep=wasm|webgpu`` asks for), runs the bundled sample, reports
  the provider, the adapter, the latency and the error against native onnxruntime, and exposes
  ``window.hone`` (``await hone.run(inputs)``, ``hone.tokenize(text)``, ``hone.imageToTensor(img)``).
- ``ort/``: ``ort.webgpu.min.mjs`` and ``ort-wasm-simd-threaded.asyncify.{mjs,wasm}`` of the pinned
  onnxruntime-web npm package: the WebGPU build, which is also the WASM fallback. Nothing is fetched
  from outside the folder. ``make ort-web`` puts them where ``ort_web_dir()`` finds them.
- ``model.onnx`` (and ``model.onnx.data`` past 2 GB): the model after ``optimize(target="web")``,
  standard ONNX ops only, each pass verified. With ``fp16=True`` also ``model.fp16.onnx`` for
  WebGPU (float16 arithmetic, float32 inputs and outputs), kept only when its outputs stay within
  ``FP16_MIN_COSINE`` of the float model's on the sample.
- ``sample/``: one sample input per model input and native onnxruntime's outputs on it (raw
  little-endian arrays), as ``input_<i>.bin`` and ``output_<i>.bin`` by position (tensor names may
  hold ``/`` or ``..``); the manifest's ``sample`` gives each file's tensor name, which the page
  reads. Text models get a sample sentence, which the page tokenizes itself.
- ``tokenizer.json`` for text models (the page's WordPiece tokenizer reads its vocabulary).
- ``manifest.json`` (``WebManifest``): inputs, outputs, preprocessing, sample, the placement check
  (which ops the WebGPU provider will hand to the CPU), sizes raw and gzip'd.

Serve it with ``hone serve-web DIR`` (``web_server.py``): the MIME types and the cross-origin
isolation headers that WASM threads need. ``browser.py`` opens it in Chromium for tests and benchmarks.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
import shutil
from importlib import resources
from pathlib import Path

import numpy as np

from hone.errors import OptionError, OutputExistsError, ProviderUnavailableError
from hone.export.placement import webgpu_placement
from hone.export.preprocessing import preprocessing_for
from hone.export.types import Fp16Check, SampleTensor, WebManifest, WebResult, WebSample
from hone.model import Model
from hone.results import write_json

logger = logging.getLogger(__name__)

# Pinned here and in the Makefile (`make ort-web`); tests/export/test_web.py checks they agree.
ORT_WEB_VERSION = "1.30.0"
# The WebGPU build of onnxruntime-web; its asyncify WASM module also runs the 'wasm' provider.
ORT_WEB_FILES = (
    "ort.webgpu.min.mjs",
    "ort-wasm-simd-threaded.asyncify.mjs",
    "ort-wasm-simd-threaded.asyncify.wasm",
)
PAGE_FILES = ("index.html", "hone.mjs", "preprocess.mjs")
DEFAULT_RUNS = 10  # timed runs the page makes after the first
FP16_MIN_COSINE = 0.999  # the fp16 model is kept only if every output is this close to float32
SAMPLE_SENTENCE = "hone runs this sentence encoder in the browser, on WebGPU when it can."
GZIP_LEVEL = 6
_NUMPY_TO_ORT = {
    "float32": "float32",
    "float16": "float16",
    "int64": "int64",
    "int32": "int32",
    "int8": "int8",
    "uint8": "uint8",
    "bool": "bool",
    "float64": "float64",
}


def ort_web_dir() -> Path:
    """Where the onnxruntime-web files are: ``$HONE_ORT_WEB_DIR``, else ``web_assets/ort`` (``make
    ort-web``)."""
    configured = os.environ.get("HONE_ORT_WEB_DIR")
    folder = (
        Path(configured) if configured else Path(str(resources.files("hone.export") / "web_assets" / "ort"))
    )
    missing = [name for name in ORT_WEB_FILES if not (folder / name).is_file()]
    if missing:
        raise ProviderUnavailableError(
            f"onnxruntime-web {ORT_WEB_VERSION} is not installed ({', '.join(missing)} missing in {folder}): "
            "run `make ort-web` (npm), or point HONE_ORT_WEB_DIR at its dist folder"
        )
    version_file = folder / "VERSION"
    if version_file.is_file() and version_file.read_text().strip() != ORT_WEB_VERSION:
        raise ProviderUnavailableError(
            f"{folder} holds onnxruntime-web {version_file.read_text().strip()}, hone pins {ORT_WEB_VERSION}:"
            " run `make ort-web` again"
        )
    return folder


def export_web(
    model: Model,
    output: str | os.PathLike[str],
    *,
    force: bool = False,
    fp16: bool = False,
    optimize: bool = True,
    runs: int = DEFAULT_RUNS,
) -> WebResult:
    """Write the web bundle for ``model`` into the folder ``output`` (see the module docstring)."""
    if runs < 1:
        raise OptionError(f"runs must be at least 1, got {runs}", argument="runs")
    folder = Path(output)
    check_folder(folder, force)
    ort_files = ort_web_dir()  # before any work: a missing runtime is the commonest set-up error
    notes: list[str] = []
    optimized, optimize_result = model, None
    if optimize:
        from hone.passes import optimize as optimize_model

        optimized, optimize_result = optimize_model(model, target="web", verify=True)
        notes.extend(optimize_result.notes)
    if folder.exists():
        shutil.rmtree(folder)  # --force given (checked above): the old bundle goes as one
    folder.mkdir(parents=True)

    model_path = optimized.save(folder / "model.onnx")
    models = {"webgpu": "model.onnx", "wasm": "model.onnx"}
    sample = _write_sample(model, optimized, model_path, folder)
    fp16_check = None
    if fp16:
        fp16_check = _write_fp16(optimized, model_path, folder, sample)
        notes.append(f"fp16 for WebGPU: {fp16_check.reason}")
        if fp16_check.kept:
            models["webgpu"] = "model.fp16.onnx"
    placement = webgpu_placement(optimized)
    if placement.cpu:
        notes.append(placement.summary())

    for name in ORT_WEB_FILES:
        (folder / "ort").mkdir(exist_ok=True)
        shutil.copyfile(ort_files / name, folder / "ort" / name)
    assets = resources.files("hone.export") / "web_assets"
    for name in PAGE_FILES:
        (folder / name).write_bytes((assets / name).read_bytes())
    preprocessing = preprocessing_for(model)
    if preprocessing.kind == "text" and preprocessing.tokenizer:
        shutil.copyfile(preprocessing.tokenizer, folder / "tokenizer.json")
        preprocessing = dataclasses.replace(preprocessing, tokenizer="tokenizer.json")

    from hone._version import __version__

    manifest = WebManifest(
        hone_version=__version__,
        model=model.name,
        source=model.source,
        ort_web_version=ORT_WEB_VERSION,
        models=models,
        external_data=_external_data(folder),
        inputs=list(optimized.inputs),
        outputs=list(optimized.outputs),
        preprocessing=preprocessing,
        sample=sample,
        placement=placement,
        runs=runs,
        fp16=fp16_check,
        size_bytes=0,
        gzip_bytes=0,
        notes=notes,
    )
    write_json(manifest, folder / "manifest.json")
    for _ in range(3):  # the sizes count the manifest, whose length depends on the sizes' digits
        sizes = folder_sizes(folder)
        if sizes == (manifest.size_bytes, manifest.gzip_bytes):
            break
        manifest.size_bytes, manifest.gzip_bytes = sizes
        write_json(manifest, folder / "manifest.json", force=True)
    files = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
    logger.info(
        "web bundle for %s in %s: %d files, %d bytes", model.name, folder, len(files), manifest.size_bytes
    )
    return WebResult(
        model=model.name,
        target="web",
        path=str(folder),
        size_bytes=manifest.size_bytes,
        files=files,
        manifest=manifest,
        optimize=optimize_result,
    )


def folder_sizes(folder: Path) -> tuple[int, int]:
    """Bytes of every file in ``folder``, raw and each gzip'd."""
    raw = gzipped = 0
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            raw += len(data)
            gzipped += len(gzip.compress(data, compresslevel=GZIP_LEVEL))
    return raw, gzipped


def check_folder(folder: Path, force: bool) -> None:
    """Refuse a path that is a file, or a non-empty folder without ``force``."""
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(
            f"{folder} exists and is not a folder; the web target writes a folder", path=str(folder)
        )
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise OutputExistsError(
            f"{folder} is not empty; pass --force to replace it or choose another folder", path=str(folder)
        )


def _sample_feeds(source: Model, optimized: Model) -> tuple[dict[str, np.ndarray], str | None]:
    """The sample input: the first of the model's samples (``--data``), else a tokenized sentence for
    text models, else inputs invented from the graph."""
    preprocessing = preprocessing_for(source)
    samples = source.samples
    if samples is not None and samples.samples and (samples.source == "data" or preprocessing.kind != "text"):
        from hone.data import feeds

        sample = feeds(source, batch=1, seed=0)
        return {spec.name: sample[spec.name] for spec in optimized.inputs}, None
    if preprocessing.kind == "text":
        from hone.zoo import minilm

        tokens = minilm.tokenize([SAMPLE_SENTENCE])
        return {spec.name: tokens[spec.name] for spec in optimized.inputs}, SAMPLE_SENTENCE
    from hone.data import feeds

    return feeds(source, batch=1, seed=0), None


def _write_sample(source: Model, optimized: Model, model_path: Path, folder: Path) -> WebSample:
    from hone.runtime import Session, SessionConfig

    feeds, text = _sample_feeds(source, optimized)
    outputs = Session(optimized, SessionConfig(provider="cpu")).run(feeds)
    (folder / "sample").mkdir()
    # File names come from the position, never from the tensor's name: ONNX names may hold '/',
    # '..' or characters a file system refuses. The manifest pairs each file with its real name.
    inputs = [
        _write_array(folder, f"sample/input_{index}.bin", name, array)
        for index, (name, array) in enumerate(feeds.items())
    ]
    expected = [
        _write_array(folder, f"sample/output_{index}.bin", spec.name, array)
        for index, (spec, array) in enumerate(zip(optimized.outputs, outputs, strict=False))
    ]
    return WebSample(inputs=inputs, expected=expected, text=text)


def _write_array(folder: Path, relative: str, name: str, array: np.ndarray) -> SampleTensor:
    dtype = np.dtype(array.dtype).name
    if dtype not in _NUMPY_TO_ORT:
        raise OptionError(
            f"the web page cannot feed a {dtype} tensor ({name}); onnxruntime-web takes "
            f"{', '.join(_NUMPY_TO_ORT)}",
            tensor=name,
        )
    (folder / relative).write_bytes(
        np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    )
    return SampleTensor(
        name=name, dtype=_NUMPY_TO_ORT[dtype], shape=[int(d) for d in array.shape], file=relative
    )


def _write_fp16(optimized: Model, model_path: Path, folder: Path, sample: WebSample) -> Fp16Check:
    """Convert to fp16 and keep it only if it answers like the float model on the sample."""
    from hone.quantize.int8 import fp16 as convert_fp16
    from hone.runtime import Session, SessionConfig
    from hone.verify import compare

    half = convert_fp16(optimized, keep_io_types=True)
    feeds = {t.name: _read_array(folder, t) for t in sample.inputs}
    float_outputs = [_read_array(folder, t) for t in sample.expected]
    half_outputs = Session(half, SessionConfig(provider="cpu")).run(feeds)
    comparison = compare(
        float_outputs,
        half_outputs,
        names=[spec.name for spec in optimized.outputs],
        reference_label="float32",
        candidate_label="fp16",
    )
    min_cosine = min(o.cosine for o in comparison.outputs)
    max_abs = max(o.max_abs_error for o in comparison.outputs)
    if min_cosine < FP16_MIN_COSINE:
        return Fp16Check(
            False,
            min_cosine,
            max_abs,
            f"not kept: cosine {min_cosine:.5f} < {FP16_MIN_COSINE} against float32; WebGPU runs float32",
        )
    half.save(folder / "model.fp16.onnx")
    return Fp16Check(
        True,
        min_cosine,
        max_abs,
        f"kept (cosine {min_cosine:.5f} >= {FP16_MIN_COSINE}, max abs error {max_abs:.3g} against float32)",
    )


def _read_array(folder: Path, tensor: SampleTensor) -> np.ndarray:
    dtype = np.dtype("bool" if tensor.dtype == "bool" else tensor.dtype).newbyteorder("<")
    return np.frombuffer((folder / tensor.file).read_bytes(), dtype=dtype).reshape(tensor.shape)


def _external_data(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("*.onnx.data"))
