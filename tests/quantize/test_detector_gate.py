"""The gate sees every channel: a detector-like model whose INT8 build collapses its class scores.

The model packs box regressions in pixels (0..320) and Sigmoid class scores (0..1) into one
``[N, 7, HW]`` output by a Concat, as YOLOv8-style exports do. Quantized per tensor, that output
shares one INT8 scale of about 320/255, so every score rounds to 0 or 1.25: the tensor's cosine
stays near 1, but the score channels are wrong. The gate must refuse it, and the output-aware
fallback must rescue it by keeping the nodes nearest that output float.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hone
from hone.quantize.gate import Budget, judge, plan_for
from hone.quantize.int8 import static_int8
from hone.quantize.calibration import calibration_set
from hone.samples import SampleSet

SIZE = 16  # input side; the output has SIZE * SIZE / 4 positions


def _detector(path: Path) -> Path:
    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.normal(0, 0.3, (8, 3, 3, 3)), "b1": rng.normal(0, 0.1, 8),
        "w2": rng.normal(0, 0.2, (8, 8, 3, 3)), "b2": rng.normal(0, 0.1, 8),
        "wb": rng.normal(0, 20.0, (4, 8, 1, 1)), "bb": np.full(4, 160.0),  # boxes in pixels
        "ws": rng.normal(0, 0.5, (3, 8, 1, 1)), "bs": np.zeros(3),  # class logits
        "shape": np.array([0, 0, -1], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "wb", "bb"], ["boxes4d"], name="box_head"),
        helper.make_node("Conv", ["r2", "ws", "bs"], ["logits4d"], name="score_head"),
        helper.make_node("Sigmoid", ["logits4d"], ["scores4d"], name="score_sigmoid"),
        helper.make_node("Reshape", ["boxes4d", "shape"], ["boxes"], name="box_flat"),
        helper.make_node("Reshape", ["scores4d", "shape"], ["scores"], name="score_flat"),
        helper.make_node("Concat", ["boxes", "scores"], ["detections"], name="pack", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("detections", TensorProto.FLOAT, ["N", 7, (SIZE // 2) ** 2])],
        [numpy_helper.from_array(np.asarray(v, np.int64 if k == "shape" else np.float32), k) for k, v in weights.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, path)
    return path


def _images(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (count, 1, 3, SIZE, SIZE)).astype(np.float32)


@pytest.fixture()
def detector(tmp_path: Path) -> hone.Model:
    model = hone.load(_detector(tmp_path / "detector.onnx"))
    samples = [{"image": image} for image in _images(64, 1)]
    model.samples = SampleSet(samples, "data", "64 random images")
    return model


def test_per_tensor_int8_of_packed_boxes_and_scores_is_refused_by_the_score_channels(detector) -> None:
    plan = plan_for(detector, threads=1)
    candidate = static_int8(detector, calibration_set(detector), fmt="qdq", per_channel=False)
    report = judge(candidate, plan, Budget())
    assert not report.passed
    (output,) = report.outputs
    assert output.name == "detections" and output.channel_axis == 0 and output.channels == 7
    assert output.worst_channel >= 4  # a class-score channel, not a box one
    assert output.worst_channel_error > 0.1
    # What the old whole-tensor gate saw: a cosine that looks fine.
    assert output.cosine_mean > 0.99


def test_the_output_aware_fallback_keeps_the_nodes_nearest_the_output_float(detector) -> None:
    kept, result = hone.quantize(detector, mode="static", fmt="qdq", per_channel=False, threads=1,
                                 measure_speed=False)
    first = result.candidates[0]
    assert not first.accuracy.passed and first.kept_float == []
    assert result.kept_quantized and result.accuracy is not None and result.accuracy.passed
    assert "pack" in result.kept_float  # the Concat whose one scale collapsed the scores
    assert any("nearest the failing output(s) detections" in note for note in result.notes)
    assert [o.name for o in result.outputs] == ["detections"] and result.outputs[0].passed
    assert "disjoint" not in result.data_split and "calibration" in result.data_split
