"""hone's passes around onnx-ir/onnxscript bugs that the ONNX backend node tests found: a folded
CastLike keeps ``saturate``, a SplitToSequence with a run-time scalar split does not fail folding,
and shape inference types a SequenceEmpty output as a sequence."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from hone.passes.fold_constants import FoldConstantsPass
from hone.passes.infer_shapes import InferShapesPass

CASTLIKE_NO_SATURATE = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[4] x, float8e4m3fn[0] like) => (float8e4m3fn[4] y) {
    y = CastLike <saturate = 0> (x, like)
}
"""
SPLIT_TO_SEQUENCE_SCALAR = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[3, 6] x, int64 split) => (seq(float[]) parts) {
    parts = SplitToSequence <axis = 1> (x, split)
}
"""
SEQUENCE_EMPTY = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[3] x) => (float[3] y) {
    empty = SequenceEmpty <dtype = 1> ()
    filled = SequenceInsert (empty, x)
    zero = Constant <value = int64 {0}> ()
    y = SequenceAt (filled, zero)
}
"""


def _model(text: str) -> ir.Model:
    return ir.from_proto(onnx.parser.parse_model(text))


def _session(model: ir.Model) -> ort.InferenceSession:
    proto = ir.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def test_folding_a_castlike_keeps_its_saturate_attribute() -> None:
    model = _model(CASTLIKE_NO_SATURATE)
    assert FoldConstantsPass()(model).modified
    (node,) = list(model.graph)
    assert node.op_type == "Cast"
    assert node.attributes["to"].as_int() == ir.DataType.FLOAT8E4M3FN.value
    assert node.attributes["saturate"].as_int() == 0
    like = ort.OrtValue.ortvalue_from_shape_and_type([0], onnx.TensorProto.FLOAT8E4M3FN)
    x = ort.OrtValue.ortvalue_from_numpy(np.array([1.0, 1e6, -1e6, 448.0], np.float32))
    (y,) = _session(model).run_with_ort_values(None, {"x": x, "like": like})
    # Without saturation, out-of-range values become NaN (0x7F/0xFF in e4m3fn), not +-448 (0x7E/0xFE).
    raw = np.ctypeslib.as_array((np.ctypeslib.ctypes.c_uint8 * 4).from_address(y.data_ptr()))
    assert raw.tolist() == [0x38, 0x7F, 0xFF, 0x7E]


def test_folding_a_split_to_sequence_with_a_run_time_scalar_split_leaves_it_alone() -> None:
    model = _model(SPLIT_TO_SEQUENCE_SCALAR)
    assert not FoldConstantsPass()(model).modified  # onnxscript's evaluator used to raise here
    assert [node.op_type for node in model.graph] == ["SplitToSequence"]
    assert model.graph.inputs[1].shape == ir.Shape([])  # the shape hidden from the folder is back
    x = np.arange(18, dtype=np.float32).reshape(3, 6)
    (parts,) = _session(model).run(None, {"x": x, "split": np.array(2, np.int64)})
    assert [p.shape for p in parts] == [(3, 2)] * 3


@pytest.mark.parametrize("fold_after", [False, True], ids=["infer", "infer+fold"])
def test_shape_inference_types_a_sequence_empty_output_as_a_sequence(fold_after: bool) -> None:
    model = _model(SEQUENCE_EMPTY)
    assert InferShapesPass()(model).modified
    if fold_after:
        FoldConstantsPass()(model)
    empty = next(node for node in model.graph if node.op_type == "SequenceEmpty").outputs[0]
    assert empty.type == ir.SequenceType(ir.TensorType(ir.DataType.FLOAT))
    x = np.array([1.0, 2.0, 3.0], np.float32)
    (y,) = _session(model).run(None, {"x": x})
    np.testing.assert_array_equal(y, x)
