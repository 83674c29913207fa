"""The gRPC service's tensor decoding and encoding, on the message classes of the tritonclient schema.

End-to-end calls from the real tritonclient.grpc are in test_clients.py; these cover the ways a
ModelInferRequest can be wrong that tritonclient never sends (typed contents, lying raw sizes).
"""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from hone.errors import InferenceInputError
from hone.serve import grpc_api, protocol, triton_proto

MESSAGES = triton_proto.load()


def request(*tensors: tuple[str, str, list[int]], raw: list[bytes] | None = None, **parameters: object):
    message = MESSAGES["ModelInferRequest"](model_name="m", id="r1")
    for name, datatype, shape in tensors:
        message.inputs.add(name=name, datatype=datatype, shape=shape)
    for buffer in raw or []:
        message.raw_input_contents.append(buffer)
    for key, value in parameters.items():
        if isinstance(value, bool):
            message.parameters[key].bool_param = value
        elif isinstance(value, int):
            message.parameters[key].int64_param = value
        else:
            message.parameters[key].string_param = str(value)
    return message


def test_raw_contents_decode_every_input_in_order() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    ids = np.array([[1, -2]], dtype=np.int64)
    decoded = grpc_api.decode_infer_request(
        request(("x", "FP32", [2, 3]), ("ids", "INT64", [1, 2]), raw=[x.tobytes(), ids.tobytes()], priority=1)
    )
    np.testing.assert_array_equal(decoded.inputs["x"], x)
    np.testing.assert_array_equal(decoded.inputs["ids"], ids)
    assert decoded.priority == 1 and decoded.id == "r1" and decoded.outputs is None


def test_typed_contents_decode_and_integer_ranges_are_checked() -> None:
    message = request(("b", "INT8", [3]))
    message.inputs[0].contents.int_contents.extend([1, -2, 3])
    assert grpc_api.decode_infer_request(message).inputs["b"].tolist() == [1, -2, 3]
    message.inputs[0].contents.int_contents[1] = 300
    with pytest.raises(InferenceInputError, match="from -128 to 127, got 300"):
        grpc_api.decode_infer_request(message)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: request(("x", "FP32", [2, 3]), raw=[b"\0" * 20]), "which is 24 bytes, but its binary_data_size is 20"),
        (lambda: request(("x", "FP32", [1]), ("y", "FP32", [1]), raw=[b"\0" * 4]), "2 inputs but 1 raw_input_contents"),
        (lambda: request(("x", "FP16", [1])), "FP16, which has no typed contents"),
        (lambda: request(("x", "FP32", [2])), "needs 2 values, but its fp32_contents holds 0"),
        (lambda: request(("x", "FP32", [1]), raw=[b"\0" * 4], priority=-1), "'priority' must be a non-negative"),
        (lambda: request(("x", "FP32", [1]), raw=[b"\0" * 4], timeout="soon"), "'timeout' must be a non-negative"),
        (lambda: request(("x", "FLOAT", [1]), raw=[b"\0" * 4]), "FLOAT"),
        (lambda: request(("x", "FP32", [1]), ("x", "FP32", [1]), raw=[b"\0" * 4] * 2), "given twice"),
        (lambda: request(), "has no inputs"),
    ],
)
def test_malformed_requests_are_invalid_argument_with_a_clear_message(build, message: str) -> None:
    with pytest.raises(InferenceInputError, match=message) as info:
        grpc_api.decode_infer_request(build())
    assert info.value.grpc_code == "INVALID_ARGUMENT"


def test_both_typed_and_raw_contents_are_refused() -> None:
    message = request(("x", "FP32", [1]), raw=[b"\0" * 4])
    message.inputs[0].contents.fp32_contents.append(1.0)
    with pytest.raises(InferenceInputError, match="send its values one way"):
        grpc_api.decode_infer_request(message)


def test_response_carries_the_asked_outputs_raw_in_order() -> None:
    outputs = {"y": np.ones((2, 2), np.float32), "names": np.array(["a", "bc"], dtype=object)}
    asked = protocol.InferRequest(
        inputs={}, outputs=(protocol.RequestedOutput("names", None), protocol.RequestedOutput("y", None)), id="7"
    )
    response = grpc_api.encode_infer_response(MESSAGES["ModelInferResponse"], "m", "1", outputs, asked)
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("names", "BYTES", [2]),
        ("y", "FP32", [2, 2]),
    ]
    assert response.raw_output_contents[0] == b"\x01\0\0\0a\x02\0\0\0bc"
    assert np.frombuffer(response.raw_output_contents[1], np.float32).tolist() == [1.0] * 4
    assert response.id == "7" and response.model_version == "1"


def test_an_element_count_that_would_wrap_in_int64_is_refused() -> None:
    message = request(("x", "FP32", [3, 6148914691236517206]))  # the int64 product wraps to 2
    message.inputs[0].contents.fp32_contents.extend([1.0, 2.0])
    with pytest.raises(InferenceInputError, match="describes 18446744073709551618 elements"):
        grpc_api.decode_infer_request(message)


def test_more_than_64_dims_are_refused_before_anything_is_built() -> None:
    with pytest.raises(InferenceInputError, match="has 70 dims; at most 64"):
        grpc_api.decode_infer_request(request(("x", "FP32", [1] * 70), raw=[b"\0" * 4]))


def test_typed_contents_are_counted_before_they_are_copied(monkeypatch: pytest.MonkeyPatch) -> None:
    message = request(("x", "FP32", [4]))
    message.inputs[0].contents.fp32_contents.extend([0.5] * 1000)

    def no_list(values: object = ()) -> list:
        copied = builtins.list(values)  # type: ignore[call-overload]
        if len(copied) > 100:
            raise AssertionError("a Python list of the contents was built before the count check")
        return copied

    monkeypatch.setattr(grpc_api, "list", no_list, raising=False)
    with pytest.raises(InferenceInputError, match="needs 4 values, but its fp32_contents holds 1000"):
        grpc_api.decode_infer_request(message)
    message.inputs[0].contents.fp32_contents[:] = [0.5, 1.5, -2.0, 3.0]
    np.testing.assert_array_equal(grpc_api.decode_infer_request(message).inputs["x"], [0.5, 1.5, -2.0, 3.0])
