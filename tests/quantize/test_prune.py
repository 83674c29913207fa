"""Magnitude pruning on small ONNX-text graphs (exact sparsity, the 2:4 pattern, what is left alone,
bad options, the caller's model untouched) and on the zoo's digits_cnn (accuracy, fine-tuning)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import hone
from hone.data import synthesize
from hone.errors import InputError, OptionError
from hone.model import Model
from hone.quantize.prune import prune
from hone.quantize.types import PruneResult
from hone.results import dumps
from hone.runtime import Session, SessionConfig

# Conv W[12, 8, 3, 3] (reduction: 8 input channels), Gemm transB W[10, 12] (K = 12 on its last dim),
# MatMul W[10, 6] (K = 10: two full groups of 4 and a tail of 2). Biases are 1-D and never pruned.
NET = """
<ir_version: 8, opset_import: ["" : 17]>
net (float[N, 8, 5, 5] x) => (float[N, 6] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, conv_w, conv_b)
    r = Relu (c)
    p = GlobalAveragePool (r)
    f = Flatten (p)
    g = Gemm <transB = 1> (f, fc_w, fc_b)
    h = Relu (g)
    m = MatMul (h, mm_w)
    y = Add (m, mm_b)
}
"""
SHAPES = {"conv_w": (12, 8, 3, 3), "conv_b": (12,), "fc_w": (10, 12), "fc_b": (10,), "mm_w": (10, 6), "mm_b": (6,)}
WEIGHTS = {"conv_w": ("Conv", 1), "fc_w": ("Gemm", 1), "mm_w": ("MatMul", 0)}  # name -> (op, reduction axis)

# The embedding table (100 ids: what synthesized int64 inputs draw from) feeds Gather and (tied)
# MatMul: it must stay dense; w2 is an ordinary weight.
TIED = """
<ir_version: 8, opset_import: ["" : 17]>
tied (int64[N, 3] ids) => (float[N, 3, 4] y) {
    e = Gather (table, ids)
    t = MatMul (e, table)
    y = MatMul (t, w2)
}
"""


def _with_weights(text: str, shapes: dict[str, tuple[int, ...]], seed: int = 0) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    for index, node in enumerate(model.graph.node):  # named, as exporters do (fuse_activation needs it)
        node.name = f"{node.op_type.lower()}_{index}"
    rng = np.random.default_rng(seed)
    for name, shape in shapes.items():
        model.graph.initializer.append(numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name))
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture
def net(tmp_path: Path) -> Model:
    path = tmp_path / "net.onnx"
    onnx.save(_with_weights(NET, SHAPES), path)
    return hone.load(path)


def _arrays(model: Model) -> dict[str, np.ndarray]:
    return {name: value.const_value.numpy().copy() for name, value in model.ir.graph.initializers.items()}


def _outputs(model: Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return Session(model, SessionConfig(threads=1, optimization="disabled")).run(feeds)


def _prune(model: Model, **options: object) -> tuple[Model, PruneResult]:
    return prune(model, measure_speed=False, samples=20, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_global_pruning_zeroes_exactly_the_requested_share_of_all_prunable_weights(net: Model, sparsity: float) -> None:
    pruned, result = _prune(net, sparsity=sparsity)
    arrays = _arrays(pruned)
    total = sum(arrays[name].size for name in WEIGHTS)
    zeros = sum(int(np.count_nonzero(arrays[name] == 0)) for name in WEIGHTS)
    assert zeros == round(sparsity * total)
    assert result.achieved_sparsity == pytest.approx(zeros / total)
    assert sorted(layer.name for layer in result.layers) == sorted(WEIGHTS)
    assert {layer.name: layer.op_type for layer in result.layers} == {n: op for n, (op, _) in WEIGHTS.items()}


def test_global_pruning_removes_the_smallest_magnitudes_across_all_layers(net: Model) -> None:
    before = _arrays(net)
    pruned, _ = _prune(net, sparsity=0.6)
    after = _arrays(pruned)
    removed = np.concatenate([np.abs(before[n][after[n] == 0]) for n in WEIGHTS])
    kept = np.concatenate([np.abs(before[n][after[n] != 0]) for n in WEIGHTS])
    assert removed.max() <= kept.min()
    for name in WEIGHTS:  # kept weights keep their exact values
        np.testing.assert_array_equal(after[name][after[name] != 0], before[name][after[name] != 0])


def test_per_layer_pruning_gives_every_layer_the_requested_sparsity(net: Model) -> None:
    before = _arrays(net)
    pruned, result = _prune(net, sparsity=0.5, scope="per_layer")
    after = _arrays(pruned)
    for name in WEIGHTS:
        assert np.count_nonzero(after[name] == 0) == round(0.5 * after[name].size)
        removed, kept = np.abs(before[name][after[name] == 0]), np.abs(before[name][after[name] != 0])
        assert removed.max() <= kept.min()
    assert all(layer.sparsity_after == pytest.approx(0.5) for layer in result.layers)
    assert result.scope == "per_layer"


def test_2_4_keeps_the_two_largest_of_every_four_weights_along_the_reduction_dim(net: Model) -> None:
    before = _arrays(net)
    pruned, result = _prune(net, pattern="2:4")
    after = _arrays(pruned)
    for name, (_, axis) in WEIGHTS.items():
        original = np.moveaxis(before[name], axis, -1)
        kept = np.moveaxis(after[name], axis, -1)
        full = original.shape[-1] // 4 * 4
        groups = original[..., :full].reshape(-1, 4)
        kept_groups = kept[..., :full].reshape(-1, 4)
        assert (np.count_nonzero(kept_groups == 0, axis=1) >= 2).all(), name
        assert (np.count_nonzero(kept_groups, axis=1) == 2).all(), name  # no zeros in the data before
        for group, kept_group in zip(groups, kept_groups):
            assert np.abs(group[kept_group == 0]).max() <= np.abs(group[kept_group != 0]).min()
        np.testing.assert_array_equal(kept[..., full:], original[..., full:])  # the tail stays dense
    assert result.target_sparsity == 0.5
    assert any("mm_w" in note and "last 2 weight(s)" in note for note in result.notes)
    assert not any("conv_w" in note and "multiple of" in note for note in result.notes)


def test_2_4_groups_a_conv_along_input_channels_not_along_the_kernel(net: Model) -> None:
    pruned, _ = _prune(net, pattern="2:4")
    conv = _arrays(pruned)["conv_w"]  # (12, 8, 3, 3): groups are conv[o, 4g:4g+4, i, j]
    per_channel_group = np.count_nonzero(conv.reshape(12, 2, 4, 3, 3) == 0, axis=2)
    assert (per_channel_group == 2).all()


def test_biases_and_other_initializers_are_left_untouched(net: Model) -> None:
    before = _arrays(net)
    pruned, result = _prune(net, sparsity=0.9)
    after = _arrays(pruned)
    for name in ("conv_b", "fc_b", "mm_b"):
        np.testing.assert_array_equal(after[name], before[name])
    assert "conv_b" not in {layer.name for layer in result.layers}


def test_a_tied_embedding_table_is_left_dense_and_the_notes_say_why(tmp_path: Path) -> None:
    path = tmp_path / "tied.onnx"
    onnx.save(_with_weights(TIED, {"table": (100, 100), "w2": (100, 4)}), path)
    model = hone.load(path)
    pruned, result = _prune(model, sparsity=0.5)
    np.testing.assert_array_equal(_arrays(pruned)["table"], _arrays(model)["table"])
    assert [layer.name for layer in result.layers] == ["w2"]
    assert any("table" in note and "Gather" in note for note in result.notes)


def test_sparsity_zero_gives_identical_outputs(net: Model) -> None:
    pruned, result = _prune(net, sparsity=0.0)
    feeds = synthesize(net.inputs, batch=3, dims={}, seed=0)
    for expected, produced in zip(_outputs(net, feeds), _outputs(pruned, feeds)):
        np.testing.assert_array_equal(produced, expected)
    assert result.achieved_sparsity == 0.0
    assert result.passed is True


def test_pruned_model_passes_the_full_onnx_checker_and_records_the_step(net: Model, tmp_path: Path) -> None:
    pruned, _ = _prune(net, sparsity=0.5)
    path = pruned.save(tmp_path / "pruned.onnx")
    onnx.checker.check_model(onnx.load(path), full_check=True)
    assert pruned.steps == ["prune unstructured global 0.5"]
    assert pruned.torch_factory is None


def test_the_callers_model_is_not_modified(net: Model) -> None:
    before = _arrays(net)
    steps, path = list(net.steps), net.path
    _prune(net, sparsity=0.8)
    _prune(net, pattern="2:4")
    for name, array in _arrays(net).items():
        np.testing.assert_array_equal(array, before[name])
    assert net.steps == steps
    assert net.path == path


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sparsity": 1.5}, "[0, 1)"),
        ({"sparsity": 1.0}, "[0, 1)"),
        ({"sparsity": -0.1}, "[0, 1)"),
        ({"sparsity": float("nan")}, "[0, 1)"),
        ({}, "needs a sparsity"),
        ({"sparsity": 0.7, "pattern": "2:4"}, "exactly 50%"),
        ({"sparsity": 0.5, "pattern": "4:8"}, "pattern '4:8' is unknown"),
        ({"sparsity": 0.5, "scope": "layerwise"}, "scope 'layerwise' is unknown"),
        ({"sparsity": 0.5, "exclude": ["conv_b"]}, "cannot exclude conv_b"),
        ({"sparsity": 0.5, "fine_tune": True}, "needs a torch-sourced model"),
        ({"sparsity": 0.5, "budget": "top1=1"}, "budget part 'top1=1'"),
    ],
)
def test_bad_options_raise_option_error_with_one_line(net: Model, options: dict, message: str) -> None:
    with pytest.raises(OptionError) as caught:
        _prune(net, **options)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_model_without_prunable_weights_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "add.onnx"
    onnx.save(onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 2] x) => (float[N, 2] y) <float[2] b = {1.0, 2.0}> { y = Add (x, b) }"""), path)
    with pytest.raises(InputError, match="no prunable weights"):
        _prune(hone.load(path), sparsity=0.5)


def test_weights_of_onnxruntime_fused_ops_from_hone_optimize_are_pruned(net: Model) -> None:
    optimized, _ = hone.optimize(net, target="ort-cpu")
    pruned, result = _prune(optimized, sparsity=0.5)
    assert {layer.op_type for layer in result.layers} >= {"FusedConv", "FusedGemm"}
    assert sum(layer.zeros_after for layer in result.layers) == round(0.5 * result.params)
    assert len(_outputs(pruned, synthesize(net.inputs, batch=2, dims={}, seed=0))) == 1


def test_excluded_layers_stay_dense(net: Model) -> None:
    pruned, result = _prune(net, sparsity=0.5, exclude=["conv_w"])
    np.testing.assert_array_equal(_arrays(pruned)["conv_w"], _arrays(net)["conv_w"])
    assert [layer.name for layer in result.layers] == ["fc_w", "mm_w"]
    assert result.excluded == ["conv_w"]


def test_zeros_shrink_the_compressed_file_but_not_the_raw_one(net: Model) -> None:
    _, result = _prune(net, sparsity=0.8)
    assert result.size_bytes_after == result.size_bytes_before  # dense storage: same bytes
    assert result.compressed_bytes_after < 0.7 * result.compressed_bytes_before


def test_a_budget_in_text_form_sets_the_gate(net: Model) -> None:
    _, result = _prune(net, sparsity=0.9, budget="agreement=0")
    assert result.accuracy_after is not None and result.accuracy_after.budget == "top-1 agreement >= 0.0%"
    assert result.passed is True


def test_the_result_serializes_to_json_with_the_gate_verdict(net: Model) -> None:
    _, result = _prune(net, sparsity=0.3)
    data = json.loads(dumps(result))
    assert data["passed"] == result.accuracy_after.passed
    assert data["accuracy_after"]["metric"] == "agreement"  # (N, 6) scores, no labels
    assert data["accuracy_before"]["candidate_value"] == 1.0
    assert len(data["layers"]) == 3
    assert any(note.startswith("accuracy gate:") for note in data["notes"])


def test_a_pruned_model_outside_the_budget_is_not_written_unless_the_budget_is_ignored(
    net: Model, tmp_path: Path
) -> None:
    out = tmp_path / "pruned.onnx"
    _, refused = _prune(net, sparsity=0.5, budget="agreement=1.01", output=out)
    assert refused.passed is False and refused.written_to is None and not out.exists()
    assert refused.not_written is not None and "\n" not in refused.not_written
    assert refused.not_written.startswith("the pruned model is outside the accuracy budget (")
    assert f"{out} was not written" in refused.not_written and "--ignore-budget" in refused.not_written

    _, forced = _prune(net, sparsity=0.5, budget="agreement=1.01", output=out, ignore_budget=True)
    assert forced.written_to == str(out) and forced.not_written is None and out.exists()
    _, within = _prune(net, sparsity=0.0, output=out, force=True)
    assert within.passed and within.written_to == str(out)


def test_a_path_is_accepted_and_speed_is_measured_in_the_same_run(net: Model) -> None:
    assert net.path is not None
    _, result = prune(str(net.path), sparsity=0.5, samples=10, threads=1)
    assert result.latency_ms_before is not None and result.latency_ms_before > 0
    assert result.latency_ms_after is not None and result.latency_ms_after > 0
    assert result.speedup == pytest.approx(result.latency_ms_before / result.latency_ms_after)
    assert any("dense" in note for note in result.notes)


@pytest.mark.slow
def test_digits_cnn_at_half_sparsity_keeps_top1_within_a_point() -> None:
    model = hone.load("digits_cnn")
    pruned, result = prune(model, sparsity=0.5, measure_speed=False)
    assert result.achieved_sparsity == pytest.approx(0.5, abs=1e-4)
    assert result.accuracy_after is not None and result.accuracy_after.metric == "top1"
    # measured: 99.56 -> 99.56 on the 450 held-out digits
    assert result.accuracy_after.float_value - result.accuracy_after.candidate_value <= 1.0
    assert result.compressed_bytes_after < 0.75 * result.compressed_bytes_before
    assert model.torch_factory is not None  # the caller's model keeps its eager module


@pytest.mark.slow
def test_2_4_on_digits_cnn_leaves_the_single_channel_first_conv_dense() -> None:
    _, result = prune("digits_cnn", pattern="2:4", measure_speed=False)
    by_name = {layer.name: layer for layer in result.layers}
    assert by_name["features.0.0.weight"].zeros_after == 0
    assert all(layer.sparsity_after == 0.5 for name, layer in by_name.items() if name != "features.0.0.weight")
    assert any("features.0.0.weight" in note and "stays dense" in note for note in result.notes)


@pytest.mark.slow
def test_fine_tuning_digits_cnn_holds_the_masks_and_recovers_accuracy() -> None:
    import torch

    model = hone.load("digits_cnn")
    pruned_only, _ = prune(model, sparsity=0.8, measure_speed=False)
    tuned, result = prune(model, sparsity=0.8, fine_tune=True, measure_speed=False)
    assert result.fine_tuned and result.accuracy_before_fine_tune is not None and result.accuracy_after is not None
    # measured: 80.2 -> 98.9 top-1 after 3 epochs (float 99.6)
    assert result.accuracy_after.candidate_value >= result.accuracy_before_fine_tune.candidate_value + 10
    masked, trained = _arrays(pruned_only), _arrays(tuned)
    for layer in result.layers:
        zeros = masked[layer.name] == 0
        assert (trained[layer.name][zeros] == 0).all(), layer.name
        assert not np.array_equal(trained[layer.name][~zeros], masked[layer.name][~zeros])  # it did train
    assert result.achieved_sparsity == pytest.approx(0.8, abs=1e-4)
    # The fine-tuned model's eager module is the one that was exported.
    assert tuned.torch_factory is not None
    from hone.zoo.digits import load_split

    images = load_split().test_images[:16]
    with torch.inference_mode():
        eager = tuned.torch_factory()(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(_outputs(tuned, {"input": images})[0], eager, rtol=1e-4, atol=1e-4)
    assert tuned.steps == ["prune unstructured global 0.8 + fine-tune 3 epochs"]
