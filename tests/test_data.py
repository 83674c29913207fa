"""hone.data and hone.infer_inputs: valid invented inputs from the graph, --data in every form, and the split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import pytest
from typer.testing import CliRunner

import hone
from hone.cli import app
from hone.data import attach, check_batchable, feeds, load_data, parse_dims, synthesize
from hone.errors import InventedInputsError, OptionError, ShapeError
from hone.samples import SampleSet


def _save(tmp_path: Path, text: str, name: str, node_names: dict[int, str] | None = None) -> Path:
    proto = onnx.parser.parse_model(text)
    for index, node_name in (node_names or {}).items():
        proto.graph.node[index].name = node_name
    onnx.checker.check_model(proto, full_check=True)
    path = tmp_path / f"{name}.onnx"
    onnx.save(proto, path)
    return path


EMBEDDING = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (int64[batch, sequence] token_ids) => (float[batch, sequence, 4] states) {
        table = Constant <value = float[7, 4] {0,1,2,3, 4,5,6,7, 8,9,10,11, 12,13,14,15, 16,17,18,19, 20,21,22,23,
                                              24,25,26,27}> ()
        ids = Cast <to = 7> (token_ids)
        states = Gather <axis = 0> (table, ids)
    }"""

GNN = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[nodes, 8] x, int64[2, edges] edge_index) => (float[edges, 8] messages) {
        zero = Constant <value = int64 {0}> ()
        source = Gather <axis = 0> (edge_index, zero)
        messages = Gather <axis = 0> (x, source)
    }"""

# A voice-activity-like model: the state carries the batch on axis 1; the sample rate chooses the If branch.
STATEFUL = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, T] audio, float[2, N, 16] state, int64 sr) => (float[N, 16] out, float[2, N, 16] state_out) {
        rate = Constant <value = int64 {16000}> ()
        supported = Equal (sr, rate)
        out = If (supported) <
            then_branch = ok () => (float[N, 16] a) {
                first = Constant <value = int64 {0}> ()
                a = Gather <axis = 0> (state, first)
            },
            else_branch = bad () => (float[N, 16] b) {
                out_of_range = Constant <value = int64 {5}> ()
                b = Gather <axis = 0> (state, out_of_range)
            }>
        state_out = Identity (state)
    }"""

OUT_OF_RANGE = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 4] x, int64[N] shift) => (float[N, 4] y) {
        big = Constant <value = int64[1] {1000}> ()
        index = Add (shift, big)
        y = Gather <axis = 0> (x, index)
    }"""

STATIC = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 3] x) => (float[1, 3] y) { y = Relu (x) }"""


def test_an_integer_input_that_indexes_a_table_stays_below_its_rows(tmp_path: Path) -> None:
    model = hone.load(_save(tmp_path, EMBEDDING, "embedding"))
    (spec,) = model.inputs
    assert spec.index_bounds == (7,) and spec.batch_axis == 0
    values = synthesize(model.inputs, batch=64, dims={"sequence": 32})["token_ids"]
    assert values.min() >= 0 and values.max() < 7 and len(np.unique(values)) == 7
    attach(model)  # runs once on invented inputs: no error


def test_edge_indices_stay_below_a_symbolic_node_count_whatever_it_is_set_to(tmp_path: Path) -> None:
    model = hone.load(_save(tmp_path, GNN, "gnn"))
    edge_index = next(s for s in model.inputs if s.name == "edge_index")
    assert edge_index.index_bounds == ("nodes",)
    for nodes in (3, 50):
        values = synthesize(model.inputs, batch=200, dims={"nodes": nodes})["edge_index"]
        assert values.max() < nodes and values.max() >= nodes // 2
    attach(model, dims={"nodes": 5})


ONE_HOT_BY_EQUAL = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (int32[batch, 6] data) => (float[batch, 6, 2] embedded) <int32[1, 1, 300] iota = {IOTA},
                                                             float[300, 2] table = {TABLE}> {
        axes = Constant <value = int64[1] {2}> ()
        column = Unsqueeze (data, axes)
        hot = Equal (column, iota)
        hot_float = Cast <to = 1> (hot)
        embedded = MatMul (hot_float, table)
    }""".replace("IOTA", ", ".join(str(i) for i in range(300))).replace("TABLE", ", ".join(["0.5"] * 600))


def test_an_integer_compared_with_0_to_k_minus_1_is_a_one_hot_index_below_k(tmp_path: Path) -> None:
    """jax2tf writes one_hot as Equal(x, iota): magika's byte values are 0..256, not 0..99."""
    model = hone.load(_save(tmp_path, ONE_HOT_BY_EQUAL, "one_hot"))
    assert model.inputs[0].index_bounds == (300,) and model.inputs[0].equal_to is None
    values = synthesize(model.inputs, batch=64)["data"]
    assert values.min() >= 0 and values.max() < 300 and values.max() >= 100


def test_the_batch_axis_is_the_dim_shared_with_the_outputs_not_axis_0(tmp_path: Path) -> None:
    model = hone.load(_save(tmp_path, STATEFUL, "stateful"))
    axes = {s.name: s.batch_axis for s in (*model.inputs, *model.outputs)}
    assert axes == {"audio": 0, "state": 1, "sr": None, "out": 0, "state_out": 1}
    made = synthesize(model.inputs, batch=3, dims={"T": 10})
    assert made["state"].shape == (2, 3, 16) and made["audio"].shape == (3, 10) and made["sr"].shape == ()


def test_an_input_compared_with_a_constant_takes_it_so_the_if_takes_the_working_branch(tmp_path: Path) -> None:
    model = hone.load(_save(tmp_path, STATEFUL, "stateful"))
    assert next(s for s in model.inputs if s.name == "sr").equal_to == 16000
    assert int(synthesize(model.inputs)["sr"]) == 16000
    attach(model, dims={"T": 10})  # the else branch's out-of-range Gather is never taken


def test_a_model_that_fails_on_invented_inputs_is_refused_in_one_line_naming_the_node(tmp_path: Path) -> None:
    model = hone.load(_save(tmp_path, OUT_OF_RANGE, "gather", {2: "shifted_gather"}))
    with pytest.raises(InventedInputsError) as caught:
        attach(model)
    message = str(caught.value)
    assert "'shifted_gather' (Gather)" in message and "--data" in message and "\n" not in message


@pytest.mark.parametrize("command", [["bench", "--batch", "1"], ["profile"], ["quantize", "-o", "OUT"],
                                     ["optimize", "-o", "OUT"], ["export", "--target", "edge", "-o", "OUT"]])
def test_every_command_that_runs_the_model_exits_2_with_that_line(tmp_path: Path, command: list[str]) -> None:
    path = _save(tmp_path, OUT_OF_RANGE, "gather", {2: "shifted_gather"})
    args = [a if a != "OUT" else str(tmp_path / "out") for a in command]
    result = CliRunner().invoke(app, [args[0], str(path), *args[1:]], standalone_mode=False)
    assert isinstance(result.exception, InventedInputsError)
    assert "'shifted_gather' (Gather)" in str(result.exception)
    assert not (tmp_path / "out").exists()


def test_the_same_model_runs_everywhere_once_real_data_is_given(tmp_path: Path) -> None:
    path = _save(tmp_path, OUT_OF_RANGE, "gather")
    # shift + 1000 must index one of the batch's rows: shift = -1000 .. -1000 + N - 1
    np.savez(tmp_path / "data.npz", x=np.ones((6, 1, 4), np.float32), shift=np.full((6, 1), -1000, np.int64))
    result = CliRunner().invoke(app, ["bench", str(path), "--batch", "1", "--budget-s", "0.2",
                                      "--data", str(tmp_path / "data.npz")], standalone_mode=False)
    assert result.exception is None, result.output


def test_a_model_without_a_batch_axis_runs_at_batch_1_only(tmp_path: Path) -> None:
    model = hone.load(_save(tmp_path, STATIC, "static"))
    assert model.inputs[0].batch_axis is None
    check_batchable(model.inputs, 1)
    with pytest.raises(ShapeError, match="no batch axis"):
        check_batchable(model.inputs, 8)


# --- --data ---------------------------------------------------------------------------------------


def test_an_npz_holds_samples_along_a_new_first_axis(tmp_path: Path) -> None:
    model = hone.load(_save(tmp_path, STATEFUL, "stateful"))
    np.savez(tmp_path / "d.npz", audio=np.zeros((5, 1, 10), np.float32), state=np.ones((5, 2, 1, 16), np.float32),
             sr=np.full((5,), 16000, np.int64))
    samples = load_data(tmp_path / "d.npz", model)
    assert len(samples) == 5 and samples.samples[0]["state"].shape == (2, 1, 16) and samples.samples[0]["sr"].shape == ()
    model.samples = samples
    batch = feeds(model, batch=3)
    assert batch["state"].shape == (2, 3, 16) and batch["audio"].shape == (3, 10) and int(batch["sr"]) == 16000


def test_a_folder_of_npz_files_is_one_sample_each_split_by_file(tmp_path: Path) -> None:
    model = hone.load(_save(tmp_path, EMBEDDING, "embedding"))
    folder = tmp_path / "samples"
    folder.mkdir()
    for i in range(4):
        np.savez(folder / f"{i}.npz", token_ids=np.full((1, 3 + i), i, np.int64))  # ragged lengths
    samples = load_data(folder, model)
    assert [s["token_ids"].shape[1] for s in samples.samples] == [3, 4, 5, 6]
    split = samples.split()
    assert len(split.calibration) == 2 and len(split.evaluation) == 2
    assert "2 calibration / 2 evaluation" in split.description
    assert len(samples.batches(model.inputs, 8)) == 4  # different lengths are not joined


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"token_ids": np.zeros((2, 1, 3), np.float32)}, "input 'token_ids' is float32, the model wants"),
        ({"token_ids": np.zeros((2, 3), np.int64), "extra": np.zeros(2)}, "'extra'.* not inputs of the model"),
        ({"token_ids": np.zeros((2, 1, 1, 3), np.int64)}, "has shape .* the model wants \\[batch, sequence\\]"),
    ],
)
def test_data_that_does_not_fit_is_one_line_naming_the_input_and_what_is_wanted(tmp_path: Path, arrays, message) -> None:
    model = hone.load(_save(tmp_path, EMBEDDING, "embedding"))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises((ShapeError, OptionError), match=message) as caught:
        load_data(tmp_path / "bad.npz", model)
    assert "\n" not in str(caught.value)


def test_a_split_by_source_keeps_every_group_on_one_side() -> None:
    samples = SampleSet([{"x": np.zeros(1)} for _ in range(10)], "data", "ten",
                        groups=["a", "a", "b", "b", "b", "c", "c", "d", "d", "d"])
    split = samples.split()
    calibration_groups = {s for s in split.calibration.groups or []}
    evaluation_groups = {s for s in split.evaluation.groups or []}
    assert calibration_groups and evaluation_groups and not calibration_groups & evaluation_groups
    assert len(split.calibration) + len(split.evaluation) == 10


def test_dims_are_name_equals_a_positive_integer_and_must_exist(tmp_path: Path) -> None:
    assert parse_dims(["sequence=64", "h=2"]) == {"sequence": 64, "h": 2}
    with pytest.raises(OptionError, match="NAME=N"):
        parse_dims(["sequence"])
    model = hone.load(_save(tmp_path, EMBEDDING, "embedding"))
    with pytest.raises(OptionError, match="no such symbolic dim.*sequence"):
        attach(model, dims={"time": 4})
    assert attach(model, dims={"sequence": 9}).default_dims["sequence"] == 9


TF2ONNX_DIMS = """
    <ir_version: 8, opset_import: ["" : 15]>
    g (float[unk__749, 16, 1] audio) => (float[unk__750, 16, 4] notes, float[unk__751, 16] onsets) {
        w = Constant <value = float[1, 4] {1, 2, 3, 4}> ()
        notes = MatMul (audio, w)
        axes = Constant <value = int64[1] {2}> ()
        onsets = ReduceSum <keepdims = 0> (notes, axes)
    }"""


def test_exporters_that_name_every_dynamic_dim_apart_still_get_axis_0_as_the_batch(tmp_path: Path) -> None:
    model = hone.load(_save(tmp_path, TF2ONNX_DIMS, "tf2onnx"))
    assert [s.batch_axis for s in (*model.inputs, *model.outputs)] == [0, 0, 0]
    assert synthesize(model.inputs, batch=4)["audio"].shape == (4, 16, 1)


def _long_kernel_model(tmp_path: Path, kernel: int, length_dim: str | None) -> Path:
    """An STFT-like front end: a Conv over audio whose length is symbolic (or unnamed) and which needs
    at least ``kernel`` samples, so every small invented length fails."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 1, kernel), np.float32) / kernel, "window")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["audio", "window"], ["frames"], strides=[kernel // 2], name="stft")],
        "stft",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", 1, length_dim])],
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["batch", 4, None])],
        [weight],
    )
    path = tmp_path / "stft.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


@pytest.mark.parametrize("length_dim", ["samples", None])
def test_a_conv_longer_than_every_small_guess_gets_a_length_from_its_kernel(tmp_path: Path, length_dim) -> None:
    model = hone.load(_long_kernel_model(tmp_path, 300, length_dim))
    attach(model)
    assert model.default_dims == {"audio[2]": 300}
    assert synthesize(model.inputs, batch=2, dims=model.default_dims)["audio"].shape == (2, 1, 300)


def test_a_model_whose_dims_have_no_names_keeps_its_leading_axis_at_1_when_retrying(tmp_path: Path) -> None:
    """silero-vad: input [?, ?], state [2, ?, 16]; the leading axis is the batch nobody named, the last
    one the samples; a retry sizes the samples and leaves the rest at 1."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((16, 1, 100), np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Unsqueeze", ["audio", "one"], ["audio3"]),
            helper.make_node("Conv", ["audio3", "w"], ["conv"], strides=[100], name="conv"),
            helper.make_node("ReduceMean", ["conv", "two"], ["pooled"], keepdims=0),
            helper.make_node("Add", ["state", "pooled"], ["state_out"]),
        ],
        "vad",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [None, None]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, None, 16])],
        [helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [2, None, 16])],
        [weight, numpy_helper.from_array(np.array([1], np.int64), "one"),
         numpy_helper.from_array(np.array([2], np.int64), "two")],
    )
    path = tmp_path / "vad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), path)
    model = hone.load(path)
    attach(model)
    shapes = {name: array.shape for name, array in synthesize(model.inputs, dims=model.default_dims).items()}
    assert shapes == {"audio": (1, 224), "state": (2, 1, 16)}
    from hone.bench.sweep import bench

    result = bench(model, budget_s=0.2, variants=["ort-all"])  # no batches given: 1 alone, not 1 and 8
    assert result.batches == [1] and {config.batch for config in result.configs} == {1}


def test_a_dim_without_a_name_is_given_as_input_and_axis(tmp_path: Path) -> None:
    model = hone.load(_long_kernel_model(tmp_path, 8, None))
    assert attach(model, dims={"audio[2]": 40}).default_dims["audio[2]"] == 40
    assert synthesize(model.inputs, dims=model.default_dims)["audio"].shape == (1, 1, 40)
    with pytest.raises(OptionError, match="no such symbolic dim"):
        attach(model, dims={"audio[1]": 3})  # a fixed axis


def test_a_dim_name_shared_by_two_inputs_gets_one_invented_size() -> None:
    from hone.specs import TensorSpec

    # alone, the mask's S would be an image side (a float 4-D input with one channel)
    specs = [
        TensorSpec("x", "float32", ("N", "S", 8)),
        TensorSpec("mask", "float32", ("N", 1, "S", "S")),
        TensorSpec("ids", "int64", ("N", "T"), value_range=(0, 5)),
    ]
    made = synthesize(specs, batch=2)
    sequence = made["x"].shape[1]
    assert made["mask"].shape == (2, 1, sequence, sequence)
    assert synthesize(specs[1:2], batch=2)["mask"].shape[2] == 224 != sequence  # the mask alone
    given = synthesize(specs, batch=2, dims={"S": 6})
    assert given["x"].shape == (2, 6, 8) and given["mask"].shape == (2, 1, 6, 6)
