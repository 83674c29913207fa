"""The command line: one clear line and exit code 2 for every bad input, JSON for every command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from conftest import small_mlp


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("error:")
    return lines[0]


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    text = tmp / "text.onnx"
    text.write_text("hello, I am not a model\n")
    truncated = tmp / "truncated.onnx"
    data = small_mlp().SerializeToString()
    truncated.write_bytes(data[: len(data) // 2])
    outside = tmp / "m" / "outside.onnx"
    outside.parent.mkdir()
    model = small_mlp()
    tensor = model.graph.initializer[0]
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "/etc/passwd"
    onnx.save(model, outside)
    factory = tmp / "f.py"
    factory.write_text(
        "import torch\n"
        "def boom():\n    raise ValueError('no weights')\n"
        "def linear():\n    return torch.nn.Linear(4, 2)\n"
    )
    return {
        "missing file": ([str(tmp / "missing.onnx")], "no such file"),
        "not onnx": ([str(text)], "not a readable ONNX model"),
        "truncated protobuf": ([str(truncated)], "truncated or corrupt"),
        "unknown zoo name": (["resnet1000"], "neither a file nor a zoo model"),
        "factory raises": ([f"{factory}:boom", "--input-shape", "1,4"], "raised ValueError: no weights"),
        "shape does not fit": ([f"{factory}:linear", "--input-shape", "1,5"], "does not accept input shape"),
        "external data outside": ([str(outside)], "outside the model's folder"),
    }


@pytest.mark.parametrize(
    "case",
    ["missing file", "not onnx", "truncated protobuf", "unknown zoo name", "factory raises",
     "shape does not fit", "external data outside"],
)
@pytest.mark.parametrize("command", ["info", "bench"])
def test_bad_input_gives_one_line_and_exit_code_2(cli, tmp_path: Path, case: str, command: str) -> None:
    args, message = _bad_inputs(tmp_path)[case]
    result = cli(command, *args)
    assert result.exit_code == 2
    assert message in _one_error_line(result.stderr)


def test_bad_batch_option_is_one_line(cli, mlp_path: Path) -> None:
    result = cli("bench", str(mlp_path), "--batch", "1,x")
    assert result.exit_code == 2
    assert "--batch" in _one_error_line(result.stderr)


def test_info_prints_and_writes_json(cli, mlp_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "info.json"
    result = cli("info", str(mlp_path), "--json", str(out))
    assert result.exit_code == 0, result.stderr
    assert "[batch, 4]" in result.stdout and "MatMul" in result.stdout
    info = json.loads(out.read_text())
    assert info["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}]
    assert info["op_counts"] == {"MatMul": 1, "Add": 1, "Relu": 1}
    assert info["parameter_count"] == 15
    assert info["opset_imports"] == {"": 17}
    assert info["file_size_bytes"] == mlp_path.stat().st_size


def test_bench_json_is_a_list_of_configurations(cli, mlp_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = cli("bench", str(mlp_path), "--batch", "1,2", "--threads", "1", "--budget-s", "0.2",
                 "--json", str(out))
    assert result.exit_code == 0, result.stderr
    configs = json.loads(out.read_text())
    assert isinstance(configs, list) and len(configs) == 4
    for config in configs:
        for key in ("batch", "threads", "provider", "variant", "p50_ms", "p90_ms", "p99_ms",
                    "throughput", "runs", "peak_mem_mb", "stable", "iqr_ms"):
            assert key in config
    assert {c["variant"] for c in configs} == {"ort-disabled", "ort-all"}
    assert "ort-all" in result.stdout and "p99 ms" in result.stdout


def test_existing_json_is_not_overwritten_without_force(cli, mlp_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "info.json"
    out.write_text("keep me")
    result = cli("info", str(mlp_path), "--json", str(out))
    assert result.exit_code == 2
    assert "--force" in _one_error_line(result.stderr)
    assert out.read_text() == "keep me"
    assert cli("info", str(mlp_path), "--json", str(out), "--force").exit_code == 0
    assert json.loads(out.read_text())["name"] == "mlp"


def test_export_onnx_writes_the_model_unchanged(cli, external_data_model: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "exported"
    out_dir.mkdir()
    target = out_dir / "copy.onnx"
    result = cli("export", str(external_data_model), "--target", "onnx", "-o", str(target),
                 "--json", str(tmp_path / "export.json"))
    assert result.exit_code == 0, result.stderr
    assert target.read_bytes() == external_data_model.read_bytes()
    assert (out_dir / "weights.bin").read_bytes() == (external_data_model.parent / "weights.bin").read_bytes()
    assert json.loads((tmp_path / "export.json").read_text())["target"] == "onnx"
    again = cli("export", str(external_data_model), "-o", str(target))
    assert again.exit_code == 2 and "--force" in _one_error_line(again.stderr)


def test_export_rejects_an_unknown_target(cli, mlp_path: Path, tmp_path: Path) -> None:
    result = cli("export", str(mlp_path), "--target", "tflite", "-o", str(tmp_path / "x"))
    assert result.exit_code == 2
    assert "tflite" in _one_error_line(result.stderr)


def test_the_installed_hone_command_reports_errors_without_a_traceback(tmp_path: Path) -> None:
    hone_script = Path(sys.executable).parent / "hone"
    command = [str(hone_script)] if hone_script.exists() else [sys.executable, "-m", "hone.cli"]
    completed = subprocess.run([*command, "info", str(tmp_path / "absent.onnx")],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert "no such file" in _one_error_line(completed.stderr)
