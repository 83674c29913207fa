"""The edge target on the zoo's digits_cnn (real held-out accuracy): an INT8 artifact smaller than the
float model, a manifest a deployment can feed it from, a profile measured in fresh processes under a
memory cap, pruning kept only within the budget, and the refusals (a non-empty folder, a cap too small)
as one line with nothing overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sklearn.datasets import load_digits

import hone
from hone.export.edge import export_edge
from hone.export.preprocessing import preprocessing_for
from hone.export.types import EdgeResult
from hone.model import Model
from hone.results import to_jsonable

INT8_FORMATS = ("qdq", "qoperator", "dynamic")
FAST = {"profile_s": 0.2, "rounds": 1}  # keeps an export to a few seconds; the numbers stay real


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error:") and "Traceback" not in stderr
    return lines[0]


@pytest.fixture(scope="module")
def digits() -> Model:
    return hone.load("digits_cnn")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EdgeResult]:
    """One export through the public API, with the default profile (2 rounds, 2 s of timed runs)."""
    folder = tmp_path_factory.mktemp("edge") / "digits"
    result = hone.export("digits_cnn", str(folder), target="edge")
    assert isinstance(result, EdgeResult)
    return folder, result


@pytest.mark.slow
def test_the_bundle_holds_the_artifact_its_manifest_and_its_profile(bundle: tuple[Path, EdgeResult]) -> None:
    folder, result = bundle
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.onnx", "profile.json"]
    assert json.loads((folder / "manifest.json").read_text()) == to_jsonable(result.manifest)
    assert json.loads((folder / "profile.json").read_text()) == to_jsonable(result.profile)
    onnx.checker.check_model(str(folder / "model.onnx"), full_check=True)


@pytest.mark.slow
def test_the_artifact_is_int8_within_the_budget_and_smaller_than_float(bundle: tuple[Path, EdgeResult]) -> None:
    folder, result = bundle
    manifest = result.manifest
    assert manifest.format in INT8_FORMATS
    assert manifest.accuracy is not None and manifest.accuracy.passed
    assert manifest.accuracy.metric == "top1" and manifest.accuracy.samples == 450  # the held-out split
    assert manifest.accuracy.float_value - manifest.accuracy.candidate_value <= 0.5
    assert manifest.size_bytes == (folder / "model.onnx").stat().st_size
    assert 0 < manifest.gzip_bytes < manifest.size_bytes
    assert manifest.size_bytes < manifest.float_size_bytes / 2  # INT8 weights: about a quarter
    assert manifest.sparsity is None
    ops = {node.op_type for node in onnx.load(str(folder / "model.onnx")).graph.node}
    assert ops & {"QLinearConv", "QuantizeLinear", "ConvInteger"}


@pytest.mark.slow
def test_the_manifest_says_how_to_feed_the_artifact(bundle: tuple[Path, EdgeResult]) -> None:
    folder, result = bundle
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["hone_version"] == hone.__version__
    assert manifest["model"] == "digits_cnn" and manifest["source"] == "digits_cnn"
    assert manifest["inputs"] == [
        {"name": "input", "dtype": "float32", "shape": ["batch", 1, 8, 8], "value_range": None, "batch_axis": 0,
         "index_bounds": [], "equal_to": None}
    ]
    assert [(o["name"], o["shape"]) for o in manifest["outputs"]] == [("logits", ["batch", 10])]
    preprocessing = manifest["preprocessing"]
    assert preprocessing["kind"] == "image" and preprocessing["size"] == [8, 8] and preprocessing["channels"] == "gray"
    assert "pixels / 16" in preprocessing["scale"]
    # Fed as the manifest says (raw digits / 16), the artifact classifies the digits.
    digits = load_digits()
    images = (digits.images[:64] / 16).astype(np.float32)[:, None]
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": images})[0]
    assert logits.shape == (64, 10)
    assert (logits.argmax(axis=1) == digits.target[:64]).mean() > 0.9


@pytest.mark.slow
def test_the_profile_measures_both_models_in_their_own_processes(bundle: tuple[Path, EdgeResult]) -> None:
    profile = bundle[1].profile
    assert (profile.intra_op_threads, profile.inter_op_threads, profile.batch, profile.optimization) == (1, 1, 1, "all")
    assert profile.cap_enforced and profile.idle_rss_mb > 10
    for run in (profile.float_model, profile.artifact):
        assert run.fits and run.error is None
        assert run.p50_ms is not None and 0 < run.p50_ms <= run.p90_ms
        assert run.runs >= 10 and run.session_create_ms is not None and run.session_create_ms > 0
        assert run.peak_rss_mb is not None and run.peak_rss_mb > profile.idle_rss_mb
        assert run.model_rss_mb is not None and run.model_rss_mb > 0
        assert run.model_vm_mb is not None and 0 < run.model_vm_mb < profile.memory_cap_mb
        assert run.address_space_limit_mb is not None and run.address_space_limit_mb > profile.memory_cap_mb


@pytest.mark.slow
def test_pruning_within_the_budget_is_kept_and_reported(tmp_path: Path, digits: Model) -> None:
    result = export_edge(digits, tmp_path / "pruned", sparsity=0.5, **FAST)
    manifest = result.manifest
    assert manifest.format in INT8_FORMATS and manifest.sparsity == pytest.approx(0.5, abs=0.01)
    assert result.prune is not None and result.prune.passed
    assert manifest.accuracy is not None and manifest.accuracy.passed  # judged against the source, not the pruned model
    assert manifest.accuracy.float_value == pytest.approx(result.prune.accuracy_before.float_value)


@pytest.mark.slow
def test_pruning_outside_the_budget_is_dropped_with_a_note(tmp_path: Path, digits: Model) -> None:
    result = export_edge(digits, tmp_path / "overpruned", sparsity=0.97, **FAST)
    assert result.prune is not None and result.prune.passed is False
    assert result.manifest.sparsity is None and result.manifest.format in INT8_FORMATS
    assert any("outside the budget" in note and "unpruned" in note for note in result.manifest.notes)


@pytest.mark.slow
def test_cli_refuses_a_non_empty_folder_then_writes_into_it_with_force(cli, tmp_path: Path) -> None:
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "model.onnx").write_text("mine")
    refused = cli("export", "digits_cnn", "--target", "edge", "-o", str(folder))
    assert refused.exit_code == 2
    assert "is not empty" in _one_error_line(refused.stderr) and "--force" in refused.stderr
    assert (folder / "model.onnx").read_text() == "mine" and len(list(folder.iterdir())) == 1

    (folder / "notes.txt").write_text("keep me")
    report = tmp_path / "edge.json"
    done = cli("export", "digits_cnn", "--target", "edge", "-o", str(folder), "--force", "--json", str(report))
    assert done.exit_code == 0, done.stderr
    for heading in ("fp32", "p50 ms", "peak RSS MB", "session ms", "top-1"):
        assert heading in done.stdout
    assert (folder / "notes.txt").read_text() == "keep me"
    written = json.loads(report.read_text())
    assert written["target"] == "edge" and written["manifest"]["format"] in INT8_FORMATS
    assert written["profile"]["artifact"]["fits"] is True
    assert onnx.load(str(folder / "model.onnx")).graph.node  # the user's file was replaced, as --force asked


@pytest.mark.slow
def test_cli_says_in_one_line_when_the_artifact_does_not_fit_under_the_cap(cli, tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    result = cli("export", "digits_cnn", "--target", "edge", "-o", str(folder), "--memory-cap-mb", "1")
    assert result.exit_code == 2
    line = _one_error_line(result.stderr)
    assert "does not fit under the memory cap of 1 MB" in line and "raise --memory-cap-mb" in line
    assert not folder.exists()


@pytest.mark.parametrize("flag", [["--sparsity", "0.5"], ["--memory-cap-mb", "64"], ["--budget", "top1-drop=1"]])
def test_edge_options_are_refused_for_the_onnx_target(cli, mlp_path: Path, tmp_path: Path, flag: list[str]) -> None:
    result = cli("export", str(mlp_path), "--target", "onnx", "-o", str(tmp_path / "copy.onnx"), *flag)
    assert result.exit_code == 2
    assert "apply to --target edge only" in _one_error_line(result.stderr)
    assert not (tmp_path / "copy.onnx").exists()


@pytest.mark.parametrize(("flag", "message"), [
    (["--sparsity", "1.5"], "--sparsity must be in [0, 1)"),
    (["--memory-cap-mb", "0"], "--memory-cap-mb must be at least 1"),
    (["--calib", "no/such/folder"], "--data no/such/folder does not exist"),
])
def test_bad_edge_options_are_refused_before_any_work(cli, tmp_path: Path, flag: list[str], message: str) -> None:
    result = cli("export", "digits_cnn", "--target", "edge", "-o", str(tmp_path / "bundle"), *flag)
    assert result.exit_code == 2
    assert message in _one_error_line(result.stderr)
    assert not (tmp_path / "bundle").exists()


def test_a_model_hone_knows_nothing_about_gets_no_preprocessing(mlp_path: Path) -> None:
    preprocessing = preprocessing_for(hone.load(mlp_path))
    assert preprocessing.kind == "none"
    assert preprocessing.description == "none known, feed tensors as the input specs say"


def test_an_rgb_zoo_model_is_fed_imagenet_normalized_pixels(tmp_path: Path) -> None:
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        net (float[N, 3, 32, 32] input) => (float[N, 3, 32, 32] y) { y = Relu (input) }
    """)
    onnx.save(proto, tmp_path / "rgb.onnx")
    model = hone.load(tmp_path / "rgb.onnx")
    model.provenance["zoo"] = "resnet18"
    preprocessing = preprocessing_for(model)
    assert (preprocessing.kind, preprocessing.size, preprocessing.channels) == ("image", [32, 32], "RGB")
    assert preprocessing.mean == pytest.approx([0.485, 0.456, 0.406])
    assert preprocessing.std == pytest.approx([0.229, 0.224, 0.225])
