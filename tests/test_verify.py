"""Numerical comparison of outputs and the run check of a loaded model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hone
from hone.data import resolve_shape, synthesize
from hone.specs import TensorSpec
from hone.verify import compare, tolerance_for, verify_runs


def test_identical_outputs_pass_with_zero_error() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    result = compare([a], [a.copy()], names=["y"], reference_label="r", candidate_label="c")
    assert result.passed
    assert result.outputs[0].max_abs_error == 0.0
    assert result.outputs[0].cosine == pytest.approx(1.0)
    assert result.outputs[0].top1_agreement == 1.0


def test_a_changed_argmax_fails_and_lowers_top1_agreement() -> None:
    ref = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    cand = np.array([[0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    result = compare([ref], [cand], names=["logits"], reference_label="r", candidate_label="c")
    assert not result.passed
    assert result.outputs[0].top1_agreement == 0.5
    assert result.max_abs_error == 1.0


def test_a_shape_mismatch_fails() -> None:
    result = compare([np.zeros((2, 3))], [np.zeros((3, 2))], names=["y"],
                     reference_label="r", candidate_label="c")
    assert not result.passed


@pytest.mark.parametrize(
    ("dtype", "tolerance"),
    [(np.float32, (1e-4, 1e-3)), (np.float64, (1e-4, 1e-3)), (np.float16, (1e-2, 1e-2)),
     (np.int64, (0.0, 0.0)), (np.bool_, (0.0, 0.0))],
)
def test_each_output_dtype_has_its_rewrite_tolerance_and_integers_must_be_equal(dtype, tolerance) -> None:
    assert tolerance_for(np.dtype(dtype)) == tolerance


def test_a_half_precision_difference_passes_at_its_tolerance_and_fails_at_float32s() -> None:
    ref = np.ones((2, 3), dtype=np.float16)
    cand = ref + np.float16(5e-3)
    for dtype, passed in ((np.float16, True), (np.float32, False)):
        atol, rtol = tolerance_for(np.dtype(dtype))
        result = compare([ref], [cand], names=["y"], reference_label="r", candidate_label="c", atol=atol, rtol=rtol)
        assert result.passed is passed


def test_a_loaded_model_runs_and_agrees_across_optimization_levels(mlp_path: Path) -> None:
    result = verify_runs(hone.load(mlp_path), batch=3)
    assert result.passed and result.finite
    assert result.output_shapes == {"y": [3, 3]}
    assert [(c.reference, c.candidate) for c in result.comparisons] == [("ort-disabled", "ort-all")]


def test_symbolic_dims_resolve_from_batch_given_dims_and_name_hints() -> None:
    spec = TensorSpec("ids", "int64", ("batch", "sequence"))
    assert resolve_shape(spec, batch=4, dims={"sequence": 16}) == (4, 16)
    assert resolve_shape(spec, batch=2, dims={}) == (2, 128)
    assert resolve_shape(TensorSpec("x", "float32", (None, 3, "height", "width")), batch=1, dims={}) == (1, 3, 224, 224)


def test_synthesized_inputs_are_seeded_and_respect_value_ranges() -> None:
    specs = [
        TensorSpec("input_ids", "int64", ("batch", "sequence"), value_range=(5, 10)),
        TensorSpec("attention_mask", "int64", ("batch", "sequence")),
        TensorSpec("x", "float32", ("batch", 2)),
    ]
    first = synthesize(specs, batch=2, dims={"sequence": 8}, seed=1)
    second = synthesize(specs, batch=2, dims={"sequence": 8}, seed=1)
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert first["input_ids"].min() >= 5 and first["input_ids"].max() < 10
    assert np.all(first["attention_mask"] == 1)
    assert first["x"].dtype == np.float32 and first["x"].shape == (2, 2)
