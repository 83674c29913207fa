"""KServe v2 tensors over HTTP: JSON and binary decoding with every check, and response encoding."""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from typing import Any

import numpy as np
import pytest

from hone.errors import InferenceInputError, RequestTooLargeError
from hone.serve import protocol
from hone.serve.protocol import InferRequest, RequestedOutput


def body(document: Any) -> bytes:
    return json.dumps(document).encode()


def tensor(
    name: str = "x", shape: list[int] | None = None, datatype: str = "FP32", data: Any = None, **extra: Any
) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "shape": [2, 2] if shape is None else shape, "datatype": datatype}
    entry["data"] = [1, 2, 3, 4] if data is None else data
    entry.update(extra)
    return entry


def binary_request(inputs: list[dict[str, Any]], *chunks: bytes, **document: Any) -> tuple[bytes, int]:
    header = body({"inputs": inputs, **document})
    return header + b"".join(chunks), len(header)


def binary_input(name: str, shape: list[int], datatype: str, size: int) -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": size}}


def bytes_elements(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(value)) + value for value in values)


def decode_error(data: bytes, header_length: int | None = None) -> str:
    with pytest.raises(InferenceInputError) as caught:
        protocol.decode_infer_request(data, header_length)
    assert caught.value.http_status == 400
    return str(caught.value)


# -- JSON tensors ----------------------------------------------------------------------------------


def test_json_tensors_decode_to_arrays_of_their_datatype_and_shape() -> None:
    request = protocol.decode_infer_request(
        body(
            {
                "id": "r-1",
                "inputs": [
                    tensor("x", [2, 2], "FP32", [1, 2.5, 3, 4]),
                    tensor("ids", [3], "INT64", [1, -2, 3]),
                ],
            }
        )
    )
    assert request.id == "r-1"
    assert request.inputs["x"].dtype == np.float32
    np.testing.assert_array_equal(request.inputs["x"], [[1, 2.5], [3, 4]])
    assert request.inputs["ids"].dtype == np.int64
    np.testing.assert_array_equal(request.inputs["ids"], [1, -2, 3])
    assert request.outputs is None and request.priority == 0 and request.timeout_ms is None


def test_nested_data_is_read_row_major_like_flat_data() -> None:
    nested = protocol.decode_infer_request(
        body({"inputs": [tensor(shape=[2, 3], data=[[1, 2, 3], [4, 5, 6]])]})
    )
    flat = protocol.decode_infer_request(body({"inputs": [tensor(shape=[2, 3], data=[1, 2, 3, 4, 5, 6])]}))
    np.testing.assert_array_equal(nested.inputs["x"], flat.inputs["x"])
    np.testing.assert_array_equal(nested.inputs["x"], np.arange(1, 7).reshape(2, 3))


@pytest.mark.parametrize(
    ("datatype", "data", "dtype"),
    [
        ("BOOL", [True, False], np.bool_),
        ("UINT8", [0, 255], np.uint8),
        ("UINT64", [0, 2**64 - 1], np.uint64),
        ("INT8", [-128, 127], np.int8),
        ("INT32", [-(2**31), 7], np.int32),
        ("FP16", [0.5, 1], np.float16),
        ("FP64", [1e300, -2], np.float64),
        ("BYTES", ["héllo", ""], np.object_),
    ],
)
def test_every_datatype_decodes_from_json(datatype: str, data: list[Any], dtype: type) -> None:
    request = protocol.decode_infer_request(
        body({"inputs": [tensor(shape=[2], datatype=datatype, data=data)]})
    )
    array = request.inputs["x"]
    assert array.dtype == np.dtype(dtype) and array.shape == (2,)
    assert array.tolist() == data


def test_an_empty_tensor_decodes_with_its_shape() -> None:
    request = protocol.decode_infer_request(body({"inputs": [tensor(shape=[0, 4], data=[])]}))
    assert request.inputs["x"].shape == (0, 4) and request.inputs["x"].dtype == np.float32


def test_request_parameters_give_priority_timeout_and_binary_output() -> None:
    request = protocol.decode_infer_request(
        body(
            {
                "inputs": [tensor()],
                "parameters": {
                    "priority": 2,
                    "timeout": 1500,
                    "binary_data_output": True,
                    "custom": "kept out",
                },
                "outputs": [{"name": "y"}, {"name": "z", "parameters": {"binary_data": False}}],
            }
        )
    )
    assert request.priority == 2
    assert request.timeout_us == 1500 and request.timeout_ms == pytest.approx(1.5)
    assert request.binary_data_output is True
    assert request.outputs == (RequestedOutput("y", None), RequestedOutput("z", False))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([1, 2], "must be a JSON object"),
        ({}, "'inputs' must be a non-empty list"),
        ({"inputs": []}, "'inputs' must be a non-empty list"),
        ({"inputs": "x"}, "'inputs' must be a non-empty list"),
        ({"inputs": [7]}, "inputs[0] must be a JSON object"),
        ({"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}, "needs a 'name'"),
        ({"inputs": [tensor(shape=[-1, 4])]}, "non-negative integers"),
        ({"inputs": [tensor(shape=[True, 4])]}, "non-negative integers"),
        ({"inputs": [tensor(shape="2x2")]}, "non-negative integers"),
        ({"inputs": [tensor(datatype="FLOAT32")]}, "datatype 'FLOAT32' is unknown"),
        ({"inputs": [tensor(datatype=None)]}, "needs a 'datatype'"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}, "has no 'data'"),
        ({"inputs": [tensor(data=5)]}, "must be a list of values"),
        ({"inputs": [tensor(data=[1, 2, 3])]}, "needs 4 values, but 'data' holds 3"),
        ({"inputs": [tensor(data=[[1, 2], [3, 4], [5]])]}, "needs 4 values, but 'data' holds 5"),
        ({"inputs": [tensor(data=[1, 2, "3", 4])]}, "takes numbers"),
        ({"inputs": [tensor(data=[1, 2, None, 4])]}, "takes numbers"),
        ({"inputs": [tensor(data=[True, False, True, False])]}, "takes numbers"),
        ({"inputs": [tensor(datatype="INT32", data=[1, 2.5, 3, 4])]}, "takes integers"),
        ({"inputs": [tensor(datatype="INT8", data=[1, 2, 300, 4])]}, "from -128 to 127, got 300"),
        ({"inputs": [tensor(datatype="UINT8", data=[1, -1, 3, 4])]}, "from 0 to 255, got -1"),
        ({"inputs": [tensor(datatype="INT64", data=[1, 2, 3, 2**70])]}, "from -9223372036854775808"),
        ({"inputs": [tensor(datatype="BOOL", data=[1, 0, 1, 0])]}, "true/false"),
        ({"inputs": [tensor(datatype="BYTES", data=["a", 1, "b", "c"])]}, "takes strings"),
        ({"inputs": [tensor(), tensor()]}, "input 'x' is given twice"),
        ({"id": 5, "inputs": [tensor()]}, "'id' must be a string"),
        ({"inputs": [tensor()], "parameters": [1]}, "'parameters' of the request must be a JSON object"),
        ({"inputs": [tensor()], "parameters": {"priority": -1}}, "'priority' must be a non-negative integer"),
        (
            {"inputs": [tensor()], "parameters": {"priority": "high"}},
            "'priority' must be a non-negative integer",
        ),
        ({"inputs": [tensor()], "parameters": {"timeout": 1.5}}, "'timeout' must be a non-negative integer"),
        ({"inputs": [tensor()], "parameters": {"binary_data_output": "yes"}}, "true or false"),
        ({"inputs": [tensor()], "outputs": {"name": "y"}}, "'outputs' must be a list"),
        (
            {"inputs": [tensor()], "outputs": [{"binary_data": True}]},
            "outputs[0] must be an object with a 'name'",
        ),
        (
            {"inputs": [tensor()], "outputs": [{"name": "y", "parameters": {"classification": 3}}]},
            "classification",
        ),
        ({"inputs": [tensor()], "outputs": [{"name": "y"}, {"name": "y"}]}, "requested twice"),
        (
            {"inputs": [tensor()], "outputs": [{"name": "y", "parameters": {"binary_data": 1}}]},
            "binary_data of output 'y'",
        ),
    ],
)
def test_malformed_json_requests_are_refused_with_what_was_wrong(document: Any, message: str) -> None:
    assert message in decode_error(body(document))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"inputs": [', "not valid JSON"),
        (b"", "not valid JSON"),
        (b'{"inputs": "\xff"}', "not UTF-8"),
    ],
)
def test_bodies_that_are_not_json_are_refused(data: bytes, message: str) -> None:
    assert message in decode_error(data)


def test_requested_outputs_the_model_lacks_are_refused_before_running() -> None:
    known = protocol.decode_infer_request(body({"inputs": [tensor()], "outputs": [{"name": "z"}]}))
    protocol.check_requested_outputs(known, ["y", "z"], "m")
    request = protocol.decode_infer_request(
        body({"inputs": [tensor()], "outputs": [{"name": "y"}, {"name": "nope"}]})
    )
    with pytest.raises(InferenceInputError, match="has no output\\(s\\) 'nope'; its outputs are: y, z"):
        protocol.check_requested_outputs(request, ["y", "z"], "m")


# -- the binary tensor extension -------------------------------------------------------------------


def test_binary_inputs_are_read_after_the_json_header_in_order() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    ids = np.array([[7, -8]], dtype=np.int64)
    data, header_length = binary_request(
        [
            binary_input("x", [2, 3], "FP32", 24),
            tensor("json", [1], "INT32", [5]),
            binary_input("ids", [1, 2], "INT64", 16),
        ],
        x.tobytes(),
        ids.tobytes(),
    )
    request = protocol.decode_infer_request(data, protocol.parse_header_length(str(header_length), len(data)))
    np.testing.assert_array_equal(request.inputs["x"], x)
    np.testing.assert_array_equal(request.inputs["ids"], ids)
    np.testing.assert_array_equal(request.inputs["json"], [5])
    assert request.inputs["x"].dtype == np.float32 and request.inputs["ids"].dtype == np.int64


def test_binary_bytes_elements_are_length_prefixed() -> None:
    raw = bytes_elements(b"ab", b"", b"\xff\x00")
    data, header_length = binary_request([binary_input("s", [3], "BYTES", len(raw))], raw)
    request = protocol.decode_infer_request(data, header_length)
    assert request.inputs["s"].tolist() == [b"ab", b"", b"\xff\x00"]


def test_binary_bool_and_fp16_inputs_keep_their_values() -> None:
    flags = np.array([True, False, True])
    halves = np.array([0.5, -2.0], dtype=np.float16)
    data, header_length = binary_request(
        [binary_input("b", [3], "BOOL", 3), binary_input("h", [2], "FP16", 4)],
        flags.tobytes(),
        halves.tobytes(),
    )
    request = protocol.decode_infer_request(data, header_length)
    assert request.inputs["b"].tolist() == [True, False, True]
    assert request.inputs["h"].dtype == np.float16 and request.inputs["h"].tolist() == [0.5, -2.0]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ten", "non-negative integer"),
        ("-4", "non-negative integer"),
        ("100000", "whole body is"),
    ],
)
def test_header_lengths_that_are_not_a_length_within_the_body_are_refused(value: str, message: str) -> None:
    with pytest.raises(InferenceInputError, match=message):
        protocol.parse_header_length(value, 100)


def test_a_missing_header_length_means_the_body_is_all_json() -> None:
    assert protocol.parse_header_length(None, 100) is None


def _lying(case: str) -> tuple[bytes, int | None]:
    x = np.ones(4, dtype=np.float32).tobytes()
    if case == "size past the end":
        return binary_request([binary_input("x", [4], "FP32", 32)], x)
    if case == "bytes nobody claims":
        return binary_request([binary_input("x", [4], "FP32", 16)], x, b"extra")
    if case == "size not the shape's":
        return binary_request([binary_input("x", [4], "FP32", 12)], x[:12])
    if case == "no header":
        data, _ = binary_request([binary_input("x", [4], "FP32", 16)])
        return data, None
    if case == "binary without header":
        data, _ = binary_request([binary_input("x", [4], "FP32", 16)], x)
        return data, None
    if case == "header inside the json":
        data, header_length = binary_request([binary_input("x", [4], "FP32", 16)], x)
        return data, header_length - 3
    if case == "data and binary":
        return binary_request([{**binary_input("x", [4], "FP32", 16), "data": [1, 2, 3, 4]}], x)
    if case == "negative size":
        return binary_request([binary_input("x", [4], "FP32", -16)], x)
    if case == "bytes prefix cut":
        raw = bytes_elements(b"abc")[:2]
        return binary_request([binary_input("s", [1], "BYTES", len(raw))], raw)
    if case == "bytes element overruns":
        raw = struct.pack("<I", 50) + b"abc"
        return binary_request([binary_input("s", [1], "BYTES", len(raw))], raw)
    if case == "bytes count not the shape's":
        raw = bytes_elements(b"a", b"b")
        return binary_request([binary_input("s", [3], "BYTES", len(raw))], raw)
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("size past the end", "is 32 bytes but only 16 bytes of binary data remain"),
        ("bytes nobody claims", "holds 21 bytes after the"),
        ("size not the shape's", "which is 16 bytes, but its binary_data_size is 12"),
        ("no header", "has no Inference-Header-Content-Length header"),
        ("binary without header", "binary tensors need the Inference-Header-Content-Length header"),
        ("header inside the json", "not valid JSON"),
        ("data and binary", "both 'data' and binary_data_size"),
        ("negative size", "must be a non-negative integer"),
        ("bytes prefix cut", "inside an element's 4-byte length prefix"),
        ("bytes element overruns", "claims 50 bytes but only 3 remain"),
        ("bytes count not the shape's", "holds 2 elements but its shape needs 3"),
    ],
)
def test_binary_lengths_that_lie_are_refused(case: str, message: str) -> None:
    data, header_length = _lying(case)
    assert message in decode_error(data, header_length)


# -- compression -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_compressed_bodies_are_inflated(encoding: str, compress: Any) -> None:
    raw = body({"inputs": [tensor()]})
    assert protocol.decompress(compress(raw), encoding, 1 << 20) == raw
    assert protocol.decompress(raw, None, 1 << 20) == raw


@pytest.mark.parametrize(
    ("data", "encoding", "message"),
    [
        (b"abc", "br", "not supported"),
        (b"not gzip at all", "gzip", "not valid gzip"),
        (gzip.compress(b"x" * 5000), "gzip", "inflates past the server's limit of 1000 bytes"),
        (gzip.compress(b"{}" * 100)[:-12], "gzip", "truncated"),
    ],
)
def test_compressed_bodies_that_are_bad_or_too_big_are_refused(
    data: bytes, encoding: str, message: str
) -> None:
    with pytest.raises((InferenceInputError, RequestTooLargeError), match=message):
        protocol.decompress(data, encoding, 1000)


# -- responses -------------------------------------------------------------------------------------


def _request(**fields: Any) -> InferRequest:
    return InferRequest(inputs={}, **fields)


OUTPUTS = {
    "y": np.array([[1.5, -2.0]], dtype=np.float32),
    "ids": np.array([3, 4], dtype=np.int64),
    "names": np.array(["a", "bé"], dtype=object),
}


def test_json_responses_carry_every_output_with_datatype_shape_and_flat_data() -> None:
    encoded = protocol.encode_infer_response(
        model_name="m", model_version="2", outputs=OUTPUTS, request=_request(outputs=None, id="r9")
    )
    assert encoded.header_length is None and encoded.content_type == "application/json"
    assert json.loads(encoded.body) == {
        "model_name": "m",
        "model_version": "2",
        "id": "r9",
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [1.5, -2.0]},
            {"name": "ids", "datatype": "INT64", "shape": [2], "data": [3, 4]},
            {"name": "names", "datatype": "BYTES", "shape": [2], "data": ["a", "bé"]},
        ],
    }


def test_a_response_has_no_id_when_the_request_had_none() -> None:
    encoded = protocol.encode_infer_response(
        model_name="m", model_version="1", outputs=OUTPUTS, request=_request(outputs=None)
    )
    assert "id" not in json.loads(encoded.body)


def test_binary_outputs_follow_the_json_in_the_order_asked() -> None:
    request = _request(
        outputs=(RequestedOutput("names", True), RequestedOutput("ids", False), RequestedOutput("y", None)),
        binary_data_output=True,
    )
    encoded = protocol.encode_infer_response(
        model_name="m", model_version="1", outputs=OUTPUTS, request=request
    )
    assert encoded.content_type == "application/octet-stream"
    assert encoded.headers == {"Inference-Header-Content-Length": str(encoded.header_length)}
    header = json.loads(encoded.body[: encoded.header_length])
    assert [output["name"] for output in header["outputs"]] == ["names", "ids", "y"]
    assert header["outputs"][1]["data"] == [3, 4]
    names_size = header["outputs"][0]["parameters"]["binary_data_size"]
    y_size = header["outputs"][2]["parameters"]["binary_data_size"]
    rest = encoded.body[encoded.header_length :]
    assert len(rest) == names_size + y_size
    assert rest[:names_size] == bytes_elements(b"a", "bé".encode())
    np.testing.assert_array_equal(np.frombuffer(rest[names_size:], dtype="<f4").reshape(1, 2), OUTPUTS["y"])


def test_encoded_binary_tensors_decode_back_to_the_same_arrays() -> None:
    arrays = {
        "f": np.linspace(-1, 1, 6, dtype=np.float16).reshape(2, 3),
        "b": np.array([True, False]),
        "u": np.array([2**64 - 1], dtype=np.uint64),
    }
    encoded = protocol.encode_infer_response(
        model_name="m",
        model_version="1",
        outputs=arrays,
        request=_request(outputs=None, binary_data_output=True),
    )
    header = json.loads(encoded.body[: encoded.header_length])
    inputs = [
        binary_input(o["name"], o["shape"], o["datatype"], o["parameters"]["binary_data_size"])
        for o in header["outputs"]
    ]
    data, header_length = binary_request(inputs, encoded.body[encoded.header_length :])
    decoded = protocol.decode_infer_request(data, header_length)
    for name, array in arrays.items():
        assert decoded.inputs[name].dtype == array.dtype
        np.testing.assert_array_equal(decoded.inputs[name], array)


def test_gzip_with_several_members_is_read_whole_and_a_bomb_is_refused_by_its_ratio() -> None:
    import gzip as gzip_module

    from hone.serve.protocol import MAX_INFLATE_RATIO, decompress

    two = gzip_module.compress(b'{"a": ') + gzip_module.compress(b"1}")
    assert decompress(two, "gzip", 1 << 20) == b'{"a": 1}'
    bomb = gzip_module.compress(b"0" * (8 << 20))
    assert len(bomb) * MAX_INFLATE_RATIO < 8 << 20
    with pytest.raises(RequestTooLargeError, match="inflates past"):  # a 413, like any body over the limit
        decompress(bomb, "gzip", 64 << 20)
    with pytest.raises(InferenceInputError, match="after its end"):
        import zlib

        decompress(zlib.compress(b"x") + b"junk", "deflate", 1 << 20)


@pytest.mark.parametrize(("shape", "data", "message"), [
    ([0, 10**20], [], "dims must fit int64"),
    ([0, 2**62, 4], [], "describes 18446744073709551616 elements"),
    ([1] * 70, [1.0], "has 70 dims; at most 64"),
    ([10**6, 10**6], [1.0], "describes 1000000000000 elements; a request of at most 67108864 bytes"),
])
def test_shapes_numpy_could_not_build_are_400s_before_any_allocation(shape: list[int], data: list, message: str) -> None:
    body = json.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": data}]}).encode()
    with pytest.raises(InferenceInputError, match=message):
        protocol.decode_infer_request(body)


def test_json_nested_too_deeply_for_the_parser_is_a_400() -> None:
    data = "[" * 100_000 + "1.0" + "]" * 100_000
    body = ('{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ' + data + "}]}").encode()
    with pytest.raises(InferenceInputError, match="nested too deeply"):
        protocol.decode_infer_request(body)


def test_an_integer_of_5000_digits_is_a_400() -> None:
    body = ('{"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [' + "9" * 5000 + "]}]}").encode()
    with pytest.raises(InferenceInputError, match="Python cannot read"):
        protocol.decode_infer_request(body)
