"""Loading models: .onnx files (with external data), zoo names, and every bad-input case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import hone
from hone.errors import (
    ExternalDataError,
    InvalidModelError,
    ModelNotFoundError,
    OutputExistsError,
    UnknownModelError,
)
from hone.runtime import Session

from conftest import small_mlp


def test_an_onnx_file_loads_with_its_symbolic_batch_dim(mlp_path: Path) -> None:
    model = hone.load(mlp_path)
    assert model.name == "mlp"
    assert model.source_kind == "onnx"
    assert [(s.name, s.dtype, s.shape) for s in model.inputs] == [("x", "float32", ("batch", 4))]
    assert [(s.name, s.shape) for s in model.outputs] == [("y", ("batch", 3))]
    assert model.opset == 17


def test_external_data_inside_the_model_folder_loads_and_runs(external_data_model: Path) -> None:
    model = hone.load(external_data_model)
    x = np.ones((2, 4), dtype=np.float32)
    (y,) = Session(model).run({"x": x})
    expected = np.maximum(x @ (np.arange(12, dtype=np.float32).reshape(4, 3) / 10) + [0.1, -0.2, 0.3], 0)
    np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_external_data_pointing_outside_the_folder_is_refused(tmp_path: Path) -> None:
    model = small_mlp()
    (tmp_path / "secret.bin").write_bytes(np.zeros(12, np.float32).tobytes())
    tensor = model.graph.initializer[0]
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", "48")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save(model, folder / "evil.onnx")
    with pytest.raises(ExternalDataError, match="outside the model's folder"):
        hone.load(folder / "evil.onnx")


def test_missing_external_data_file_says_which_file(external_data_model: Path) -> None:
    (external_data_model.parent / "weights.bin").unlink()
    with pytest.raises(ExternalDataError, match="weights.bin.*missing"):
        hone.load(external_data_model)


def test_truncated_external_data_is_refused(external_data_model: Path) -> None:
    data = external_data_model.parent / "weights.bin"
    data.write_bytes(data.read_bytes()[:10])
    with pytest.raises(ExternalDataError, match="truncated"):
        hone.load(external_data_model)


def test_a_missing_file_is_reported_as_such(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no such file"):
        hone.load(tmp_path / "nope.onnx")


def test_a_text_file_is_not_an_onnx_model(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\n" * 20)
    with pytest.raises(InvalidModelError):
        hone.load(path)


def test_a_truncated_protobuf_is_reported_as_corrupt(mlp_path: Path) -> None:
    data = mlp_path.read_bytes()
    mlp_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidModelError, match="truncated or corrupt"):
        hone.load(mlp_path)


def test_random_bytes_are_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "noise.onnx"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(InvalidModelError):
        hone.load(path)


def test_a_graph_that_fails_the_checker_is_invalid(tmp_path: Path) -> None:
    model = small_mlp()
    model.graph.node[0].op_type = "NoSuchOp"
    path = tmp_path / "bad_op.onnx"
    onnx.save(model, path)
    with pytest.raises(InvalidModelError, match="checker"):
        hone.load(path)


def test_a_sequence_of_maps_output_is_refused_by_name(tmp_path: Path) -> None:
    """scikit-learn converters end in ZipMap: a seq(map) output hone cannot compare or time."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("LinearClassifier", ["x"], ["label", "scores"], domain="ai.onnx.ml",
                             coefficients=[1.0, -1.0, 0.5, 0.5], intercepts=[0.0, 0.0],
                             classlabels_ints=[0, 1]),
            helper.make_node("ZipMap", ["scores"], ["probabilities"], domain="ai.onnx.ml",
                             classlabels_int64s=[0, 1]),
        ],
        "logreg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [1]),
            helper.make_value_info(
                "probabilities",
                helper.make_sequence_type_proto(
                    helper.make_map_type_proto(
                        TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])
                    )
                ),
            ),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("ai.onnx.ml", 1)], ir_version=8)
    path = tmp_path / "logreg.onnx"
    onnx.save(model, path)
    wanted = r"output 'probabilities' is a sequence\(map\(tensor\)\), which hone cannot read"
    with pytest.raises(InvalidModelError, match=wanted) as caught:
        hone.load(path)
    assert "zipmap" in str(caught.value)


def test_a_folder_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelError, match="folder"):
        hone.load(tmp_path)


def test_an_unknown_name_lists_the_zoo(tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError, match="resnet18.*digits_cnn.*minilm"):
        hone.load("resnet1000")


def test_save_refuses_to_overwrite_without_force(mlp_path: Path, tmp_path: Path) -> None:
    model = hone.load(mlp_path)
    target = tmp_path / "copy.onnx"
    target.write_text("precious")
    with pytest.raises(OutputExistsError, match="--force"):
        model.save(target)
    assert target.read_text() == "precious"
    model.save(target, force=True)
    assert hone.load(target).inputs == model.inputs


def test_saved_models_keep_their_input_value_ranges(tmp_path: Path) -> None:
    from dataclasses import replace

    model = small_mlp()
    model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    loaded = hone.load(path)
    loaded.inputs = (replace(loaded.inputs[0], value_range=(0.0, 5.0)),)
    loaded.default_dims = {"sequence": 16}
    loaded.save(tmp_path / "saved.onnx")
    again = hone.load(tmp_path / "saved.onnx")
    assert again.inputs[0].value_range == (0.0, 5.0)
    assert again.default_dims == {"sequence": 16}


def test_models_over_the_in_memory_limit_are_saved_with_external_data(
    mlp_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hone.model as model_module

    from onnx import numpy_helper

    proto = small_mlp()
    weight = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    proto.graph.initializer[0].CopyFrom(numpy_helper.from_array(weight, "w1"))
    bias = np.linspace(-1, 1, 3).astype(np.float32)
    proto.graph.initializer[1].CopyFrom(numpy_helper.from_array(bias, "b1"))
    monkeypatch.setattr(model_module, "_IN_MEMORY_LIMIT_BYTES", 8)
    monkeypatch.setattr(model_module, "_EXTERNAL_DATA_MIN_TENSOR_BYTES", 0)
    onnx.save(proto, tmp_path / "m.onnx")
    model = hone.load(tmp_path / "m.onnx")
    target = model.save(tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").stat().st_size >= 48 + 12
    again = hone.load(target)
    assert hone.info(again).external_data_files == ["big.onnx.data"]
    x = np.ones((1, 4), dtype=np.float32)
    np.testing.assert_array_equal(Session(again).run({"x": x})[0], Session(model).run({"x": x})[0])


def test_a_changed_model_over_the_limit_runs_from_a_temporary_file(
    mlp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hone.model as model_module

    monkeypatch.setattr(model_module, "_IN_MEMORY_LIMIT_BYTES", 8)
    model = hone.load(mlp_path)
    changed = model.with_graph(model.ir, "identity step")
    source = changed.onnx_source()
    assert isinstance(source, str) and source.endswith(".onnx")
    assert changed.steps == ["identity step"]
    x = np.ones((2, 4), dtype=np.float32)
    np.testing.assert_array_equal(Session(changed).run({"x": x})[0], Session(model).run({"x": x})[0])


def test_the_api_functions_keep_their_names_after_submodules_are_imported() -> None:
    import importlib

    for submodule in ("hone.bench.sweep", "hone.info", "hone.export", "hone.job"):
        importlib.import_module(submodule)
    assert all(callable(getattr(hone, name)) for name in ("load", "info", "bench", "run", "export"))
    assert hone.info.__module__ == "hone" and hone.bench.__module__ == "hone"


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '{"session.x64quantprecision": 1}'])
def test_a_session_config_that_is_not_an_object_of_strings_is_ignored_with_a_warning(
        mlp_path: Path, raw: str, caplog: pytest.LogCaptureFixture) -> None:
    model = hone.load(mlp_path)
    model.ir.metadata_props["hone.session_config"] = raw
    assert model.session_config == {}
    assert "hone.session_config" in caplog.text and "not a JSON object of strings" in caplog.text
    Session(model).run({"x": np.zeros((1, 4), dtype=np.float32)})


def test_session_config_entries_merge_and_reach_onnxruntime(mlp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    import hone.runtime

    seen: dict[str, str] = {}

    class Recording(ort.SessionOptions):
        def add_session_config_entry(self, key: str, value: str) -> None:
            seen[key] = value
            super().add_session_config_entry(key, value)

    monkeypatch.setattr(hone.runtime.ort, "SessionOptions", Recording)
    model = hone.load(mlp_path).with_session_config({"session.x64quantprecision": "1"})
    model = model.with_session_config({"session.intra_op.allow_spinning": "0"})
    assert model.session_config == {"session.x64quantprecision": "1", "session.intra_op.allow_spinning": "0"}
    assert "onnxruntime session config session.intra_op.allow_spinning=0" in model.steps[-1]
    Session(model).run({"x": np.zeros((1, 4), dtype=np.float32)})
    assert seen == model.session_config
