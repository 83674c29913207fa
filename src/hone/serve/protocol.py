"""KServe v2 inference requests and responses over HTTP: tensors in JSON and the binary extension.

Pure functions, no web framework: ``decode_infer_request`` turns a request body into numpy arrays
and the request's options, ``encode_infer_response`` turns output arrays into a response body.
Every way a body can be wrong is an ``InferenceInputError`` (HTTP 400) whose message names the
field and says what was expected; nothing here knows the model (``ModelRunner.validate`` checks
names, datatypes and shapes against it).

JSON tensors (the Open Inference Protocol)::

    {"id": "42", "parameters": {"priority": 1, "timeout": 5000, "binary_data_output": false},
     "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [[1, 2, 3, 4], [5, 6, 7, 8]]}],
     "outputs": [{"name": "y", "parameters": {"binary_data": true}}]}

``data`` is row-major, flat or nested. ``priority`` follows Triton: 0 (or absent) is the default
level, 1 the highest; ``timeout`` is in microseconds, 0 meaning none.

The binary tensor extension (Triton's): the body is the JSON header followed by raw tensors; the
``Inference-Header-Content-Length`` header gives the JSON's length; an input whose
``parameters.binary_data_size`` is N takes the next N bytes, in the order of ``inputs``. Fixed-size
datatypes are little-endian and row-major; BYTES elements are each a 4-byte little-endian length
then the bytes. The sizes must account for every byte after the JSON, exactly. Outputs asked for
with ``binary_data`` (or every output, with the request parameter ``binary_data_output``) come back
the same way, after the response JSON, with the same header on the response.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hone.errors import InferenceInputError, RequestTooLargeError
from hone.serve.datatypes import KSERVE_DATATYPES, datatype_from_dtype, dtype_from_datatype

HEADER_LENGTH = "Inference-Header-Content-Length"
# The largest request body (HTTP) or message (gRPC) a server takes by default.
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"
# numpy's limit on dimensions (NPY_MAXDIMS); a shape with more is refused before anything is built.
MAX_RANK = 64
_INT64_MAX = 2**63 - 1
_BYTES_LENGTH = struct.Struct("<I")
_INTEGER_KINDS = "iu"


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for by name, and whether it wants it as binary data."""

    name: str
    binary: bool | None  # None: as the request's binary_data_output says


@dataclass(frozen=True)
class InferRequest:
    """A decoded inference request: its tensors and its options."""

    inputs: dict[str, np.ndarray]
    outputs: tuple[RequestedOutput, ...] | None  # None: every output of the model
    id: str | None = None
    priority: int = 0  # Triton's: 0 the default level, 1 the highest
    timeout_us: int = 0  # 0: none
    binary_data_output: bool = False

    @property
    def timeout_ms(self) -> float | None:
        return self.timeout_us / 1000 if self.timeout_us else None


@dataclass(frozen=True)
class EncodedResponse:
    """A response body; ``header_length`` is set when binary outputs follow the JSON."""

    body: bytes
    header_length: int | None

    @property
    def content_type(self) -> str:
        return JSON_CONTENT_TYPE if self.header_length is None else BINARY_CONTENT_TYPE

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.header_length is None else {HEADER_LENGTH: str(self.header_length)}


# -- request -------------------------------------------------------------------------------------


def parse_header_length(value: str | None, body_size: int) -> int | None:
    """The JSON header's length from ``Inference-Header-Content-Length`` (None when absent)."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit():
        raise InferenceInputError(
            f"{HEADER_LENGTH} must be the byte length of the JSON header, a non-negative integer, "
            f"got {value!r}"
        )
    length = int(text)
    if length > body_size:
        raise InferenceInputError(
            f"{HEADER_LENGTH} says the JSON header is {length} bytes but the whole body is "
            f"{body_size} bytes; send the JSON's length"
        )
    return length


# A compressed body may inflate to at most this many times its size (and never past the body limit).
MAX_INFLATE_RATIO = 1024


def decompress(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """The body as sent before ``Content-Encoding`` (gzip, deflate), never more than ``max_bytes``."""
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return body
    if name not in ("gzip", "deflate"):
        raise InferenceInputError(
            f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or no encoding"
        )
    # wbits: 16 + 15 reads gzip; 15 reads zlib-wrapped deflate (what HTTP's "deflate" means).
    # Several gzip members (concatenated files, RFC 1952) are read one after the other, every
    # member counted against the one limit; bytes after the last member are refused.
    limit = min(max_bytes, MAX_INFLATE_RATIO * max(len(body), 1))
    parts: list[bytes] = []
    size, rest = 0, body
    while True:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if name == "gzip" else zlib.MAX_WBITS)
        try:
            part = inflater.decompress(rest, limit - size + 1)
        except zlib.error as exc:
            raise InferenceInputError(f"the body is not valid {name} data ({exc})") from exc
        size += len(part)
        parts.append(part)
        if size > limit:
            raise RequestTooLargeError(
                f"the {name} body inflates past the server's limit of {limit} bytes ({max_bytes} in all, at"
                f" most {MAX_INFLATE_RATIO}x the compressed size); send less per request"
            )
        if not inflater.eof:
            raise InferenceInputError(f"the {name} body is truncated")
        rest = inflater.unused_data
        if not rest:
            return b"".join(parts)
        if name != "gzip":
            raise InferenceInputError(f"the {name} body has {len(rest)} bytes after its end")


def element_count(shape: Sequence[int], name: str, max_elements: int) -> int:
    """The number of elements of ``shape``, checked in Python integers before anything is allocated:
    at most ``MAX_RANK`` dims, each within int64, and at most ``max_elements`` elements counting
    only the non-zero dims (every element takes at least one byte of a request, so a request of
    at most N bytes carries at most N elements; a zero dim does not make ``[0, 10**20]`` small for
    numpy, which refuses it). Raises InferenceInputError (400)."""
    if len(shape) > MAX_RANK:
        raise InferenceInputError(f"input {name!r} has {len(shape)} dims; at most {MAX_RANK} are allowed")
    if any(dim > _INT64_MAX for dim in shape):
        raise InferenceInputError(
            f"input {name!r} has a dim above 2**63 - 1 in its shape; dims must fit int64"
        )
    spanned = math.prod(dim for dim in shape if dim)
    if spanned > max_elements:
        raise InferenceInputError(
            f"input {name!r} has shape {_short(shape)}, which describes {spanned} elements; a request of at "
            f"most {max_elements} bytes cannot carry more than {max_elements}"
        )
    return math.prod(shape)


def _clipped(value: object, limit: int = 120) -> str:
    """``repr(value)``, cut to ``limit`` characters (a client's value in a one-line message)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _short(shape: Sequence[int]) -> str:
    """A shape for a message: the whole list, or its first dims and how many more."""
    return (
        str(list(shape))
        if len(shape) <= 8
        else f"[{', '.join(map(str, shape[:8]))}, ... ({len(shape)} dims)]"
    )


def decode_infer_request(
    body: bytes, header_length: int | None = None, max_elements: int = DEFAULT_MAX_BODY_BYTES
) -> InferRequest:
    """Inputs and options of a v2 inference request; every malformed field is a 400.

    ``max_elements`` bounds each input's element count (``element_count``): the server's body limit."""
    json_part = body if header_length is None else body[:header_length]
    document = _load_json(json_part)
    if not isinstance(document, dict):
        raise InferenceInputError(
            f"the request must be a JSON object with an 'inputs' list, got {_kind(document)}"
        )
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InferenceInputError(f"'id' must be a string, got {_kind(request_id)}")
    parameters = _parameters(document, "the request")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InferenceInputError(
            "'inputs' must be a non-empty list of tensors, each with name, shape, datatype and data"
        )
    binary = memoryview(body)[header_length:] if header_length is not None else None
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for index, raw in enumerate(raw_inputs):
        name, array, used = _decode_input(raw, index, binary, offset, max_elements)
        if name in inputs:
            raise InferenceInputError(f"input {name!r} is given twice; give each input once")
        inputs[name] = array
        offset += used
    if binary is not None and offset != len(binary):
        raise InferenceInputError(
            f"the body holds {len(binary)} bytes after the {header_length}-byte JSON header but the "
            f"inputs' binary_data_size add up to {offset}; every byte must belong to one input"
        )
    return InferRequest(
        inputs=inputs,
        outputs=_requested_outputs(document.get("outputs")),
        id=request_id,
        priority=_non_negative_int(parameters, "priority", default=0),
        timeout_us=_non_negative_int(parameters, "timeout", default=0),
        binary_data_output=_bool(parameters, "binary_data_output", "the request", default=False),
    )


def _decode_input(
    raw: object, index: int, binary: memoryview | None, offset: int, max_elements: int
) -> tuple[str, np.ndarray, int]:
    """One input tensor: its name, its array, and how many binary bytes it took."""
    if not isinstance(raw, dict):
        raise InferenceInputError(f"inputs[{index}] must be a JSON object, got {_kind(raw)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InferenceInputError(f"inputs[{index}] needs a 'name' string")
    shape = _shape(raw.get("shape"), name)
    datatype = raw.get("datatype")
    if not isinstance(datatype, str):
        raise InferenceInputError(
            f"input {name!r} needs a 'datatype' string, one of: {', '.join(KSERVE_DATATYPES)}"
        )
    dtype = dtype_from_datatype(datatype)
    parameters = _parameters(raw, f"input {name!r}")
    count = element_count(shape, name, max_elements)
    if "binary_data_size" in parameters:
        if "data" in raw:
            raise InferenceInputError(
                f"input {name!r} has both 'data' and binary_data_size; send its values one way"
            )
        size = parameters["binary_data_size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InferenceInputError(
                f"binary_data_size of input {name!r} must be a non-negative integer, got {size!r}"
            )
        if binary is None:
            raise InferenceInputError(
                f"input {name!r} has binary_data_size but the request has no {HEADER_LENGTH} header "
                "saying where the JSON ends and the binary data begins"
            )
        if offset + size > len(binary):
            raise InferenceInputError(
                f"binary_data_size of input {name!r} is {size} bytes but only {len(binary) - offset} "
                "bytes of binary data remain; the sizes must match the data sent"
            )
        chunk = binary[offset : offset + size]
        return name, array_from_bytes(chunk, name, datatype, dtype, shape, count), size
    if "data" not in raw:
        raise InferenceInputError(
            f"input {name!r} has no 'data' and no binary_data_size parameter; send its values"
        )
    return name, _from_json(raw["data"], name, datatype, dtype, shape, count), 0


def array_from_bytes(
    chunk: memoryview, name: str, datatype: str, dtype: np.dtype, shape: tuple[int, ...], count: int
) -> np.ndarray:
    """A tensor from its binary form (little-endian row-major; BYTES length-prefixed), size-checked.

    The same format is the HTTP binary extension's and gRPC's ``raw_input_contents``.
    """
    if datatype == "BYTES":
        return _bytes_elements(chunk, name, count).reshape(shape)
    expected = count * dtype.itemsize
    if len(chunk) != expected:
        raise InferenceInputError(
            f"input {name!r} is {datatype} of shape {list(shape)}, which is {expected} bytes, but its "
            f"binary_data_size is {len(chunk)}"
        )
    return (
        np.frombuffer(chunk, dtype=dtype.newbyteorder("<"), count=count)
        .astype(dtype, copy=False)
        .reshape(shape)
    )


def _bytes_elements(chunk: memoryview, name: str, count: int) -> np.ndarray:
    """BYTES binary data: each element a 4-byte little-endian length, then that many bytes."""
    elements: list[bytes] = []
    offset = 0
    while offset < len(chunk):
        if offset + 4 > len(chunk):
            raise InferenceInputError(f"input {name!r} (BYTES) ends inside an element's 4-byte length prefix")
        (length,) = _BYTES_LENGTH.unpack_from(chunk, offset)
        offset += 4
        if offset + length > len(chunk):
            raise InferenceInputError(
                f"input {name!r} (BYTES): an element claims {length} bytes but only "
                f"{len(chunk) - offset} remain in its binary data"
            )
        elements.append(bytes(chunk[offset : offset + length]))
        offset += length
    if len(elements) != count:
        raise InferenceInputError(
            f"input {name!r} (BYTES) holds {len(elements)} elements but its shape needs {count}"
        )
    array = np.empty(count, dtype=object)
    array[:] = elements
    return array


def _from_json(
    data: object, name: str, datatype: str, dtype: np.dtype, shape: tuple[int, ...], count: int
) -> np.ndarray:
    if not isinstance(data, list):
        raise InferenceInputError(
            f"'data' of input {name!r} must be a list of values (flat or nested), got {_kind(data)}"
        )
    flat = _flatten(data)
    if len(flat) != count:
        raise InferenceInputError(
            f"input {name!r} has shape {list(shape)}, which needs {count} values, but 'data' holds "
            f"{len(flat)}"
        )
    if datatype == "BYTES":
        if not all(isinstance(value, str) for value in flat):
            raise InferenceInputError(f"BYTES input {name!r} takes strings in JSON")
        array = np.empty(count, dtype=object)
        array[:] = flat
        return array.reshape(shape)
    if datatype == "BOOL":
        if not all(type(value) is bool for value in flat):
            raise InferenceInputError(f"BOOL input {name!r} takes true/false values in JSON")
        return np.array(flat, dtype=dtype).reshape(shape)
    if dtype.kind in _INTEGER_KINDS:
        return _integers(flat, name, datatype, dtype).reshape(shape)
    try:
        values = np.array(flat)
    except (ValueError, OverflowError, TypeError) as exc:
        raise InferenceInputError(f"'data' of input {name!r} is not a list of numbers ({exc})") from exc
    if count and values.dtype.kind not in "iuf":
        raise InferenceInputError(
            f"{datatype} input {name!r} takes numbers in JSON, got values like "
            f"{_sample([v for v in flat if type(v) not in (int, float)])}"
        )
    return values.astype(dtype).reshape(shape)


def _integers(flat: list[Any], name: str, datatype: str, dtype: np.dtype) -> np.ndarray:
    """JSON integers, each within the datatype's range (checked exactly, in Python ints)."""
    if not all(type(value) is int for value in flat):
        raise InferenceInputError(
            f"{datatype} input {name!r} takes integers in JSON, got values like "
            f"{_sample([v for v in flat if type(v) is not int])}"
        )
    if flat:
        info = np.iinfo(dtype)
        low, high = min(flat), max(flat)
        if low < info.min or high > info.max:
            raise InferenceInputError(
                f"{datatype} input {name!r} takes integers from {info.min} to {info.max}, got "
                f"{low if low < info.min else high}"
            )
    return np.array(flat, dtype=dtype)


def _flatten(data: list[Any]) -> list[Any]:
    """Row-major values of a flat or nested list."""
    if not any(isinstance(value, list) for value in data):
        return data
    flat: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _shape(raw: object, name: str) -> tuple[int, ...]:
    valid = isinstance(raw, list) and all(
        isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in raw
    )
    if not valid:
        raise InferenceInputError(
            f"input {name!r} needs a 'shape': a list of non-negative integers, got {_clipped(raw)}"
        )
    return tuple(raw)  # type: ignore[arg-type]


def _requested_outputs(raw: object) -> tuple[RequestedOutput, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InferenceInputError(f"'outputs' must be a list of {{'name': ...}} objects, got {_kind(raw)}")
    outputs: list[RequestedOutput] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InferenceInputError(f"outputs[{index}] must be an object with a 'name' string")
        name = item["name"]
        parameters = _parameters(item, f"output {name!r}")
        if parameters.get("classification"):
            raise InferenceInputError(
                f"output {name!r} asks for classification, which hone serve does not support; ask "
                "for the raw output and take its top-k on the client"
            )
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise InferenceInputError(f"binary_data of output {name!r} must be true or false")
        outputs.append(RequestedOutput(name, binary))
    names = [output.name for output in outputs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InferenceInputError(f"output(s) {', '.join(map(repr, repeated))} requested twice")
    return tuple(outputs)


def check_requested_outputs(request: InferRequest, output_names: Sequence[str], model: str) -> None:
    """Refuse, before running, outputs the model does not have."""
    if request.outputs is None:
        return
    unknown = [output.name for output in request.outputs if output.name not in output_names]
    if unknown:
        raise InferenceInputError(
            f"model {model!r} has no output(s) {', '.join(map(repr, unknown))}; its outputs are: "
            f"{', '.join(output_names)}",
            model=model,
        )


def _parameters(owner: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    parameters = owner.get("parameters", {})
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InferenceInputError(f"'parameters' of {where} must be a JSON object, got {_kind(parameters)}")
    return parameters


def _non_negative_int(parameters: Mapping[str, Any], key: str, *, default: int) -> int:
    value = parameters.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        unit = " (microseconds; 0: none)" if key == "timeout" else " (0: the default, 1: highest)"
        raise InferenceInputError(
            f"request parameter {key!r} must be a non-negative integer{unit}, got {value!r}"
        )
    return value


def _bool(parameters: Mapping[str, Any], key: str, where: str, *, default: bool) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise InferenceInputError(f"parameter {key!r} of {where} must be true or false, got {value!r}")
    return value


def _load_json(data: bytes | memoryview) -> Any:
    try:
        return json.loads(bytes(data))
    except RecursionError as exc:  # Python's parser recurses once per nesting level
        raise InferenceInputError(
            "the request's JSON is nested too deeply to parse; tensors' 'data' may be flat (row-major)"
        ) from exc
    except UnicodeDecodeError as exc:
        raise InferenceInputError(
            f"the request's JSON is not UTF-8 ({exc.reason} at byte {exc.start}); binary tensors "
            f"need the {HEADER_LENGTH} header"
        ) from exc
    except json.JSONDecodeError as exc:
        raise InferenceInputError(
            f"the request is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except ValueError as exc:  # e.g. an integer of over 4300 digits (Python's int conversion limit)
        raise InferenceInputError(f"the request's JSON holds a value Python cannot read: {exc}") from exc


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _sample(values: Sequence[Any]) -> str:
    return ", ".join(json.dumps(value) if _jsonable(value) else repr(value) for value in values[:3])


def _jsonable(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, dict))


# -- response ------------------------------------------------------------------------------------


def encode_infer_response(
    *,
    model_name: str,
    model_version: str,
    outputs: Mapping[str, np.ndarray],
    request: InferRequest,
) -> EncodedResponse:
    """The response body: outputs in the order asked (else the model's), JSON or binary each."""
    selected = (
        [(name, request.binary_data_output) for name in outputs]
        if request.outputs is None
        else [
            (output.name, request.binary_data_output if output.binary is None else output.binary)
            for output in request.outputs
        ]
    )
    tensors: list[str] = []
    chunks: list[bytes] = []
    for name, binary in selected:
        array = outputs[name]
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": datatype_from_dtype(array.dtype),
            "shape": list(array.shape),
        }
        if binary:
            chunk = tensor_bytes(array)
            tensor["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
            tensors.append(_dumps(tensor))
        else:  # the values' text is written apart, in slices (below), then spliced in
            tensors.append(_dumps(tensor)[:-1] + ',"data":' + _json_values_text(array, name) + "}")
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        document["id"] = request.id
    header = (_dumps(document)[:-1] + ',"outputs":[' + ",".join(tensors) + "]}").encode()
    if not chunks:
        return EncodedResponse(header, None)
    return EncodedResponse(b"".join([header, *chunks]), len(header))


def _dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"), allow_nan=False)


# JSON values are converted and written this many at a time: each slice is one short C call
# (about a millisecond), so a thread writing millions of them lets the event loop's thread take the
# GIL between slices (json.dumps and tolist hold it for their whole call).
_JSON_SLICE = 16384


def _json_values_text(array: np.ndarray, name: str) -> str:
    """The JSON list of ``array``'s row-major values (see ``_json_values``), written in slices."""
    flat = array.reshape(-1)
    if flat.size <= _JSON_SLICE:
        return json.dumps(_json_values(flat, name), separators=(",", ":"), allow_nan=False)
    parts = [
        json.dumps(_json_values(flat[i : i + _JSON_SLICE], name), separators=(",", ":"), allow_nan=False)[
            1:-1
        ]
        for i in range(0, flat.size, _JSON_SLICE)
    ]
    return "[" + ",".join(parts) + "]"


def tensor_bytes(array: np.ndarray) -> bytes:
    """An array in the binary tensor format: little-endian row-major, BYTES length-prefixed."""
    if datatype_from_dtype(array.dtype) == "BYTES":
        parts: list[bytes] = []
        for element in array.reshape(-1).tolist():
            data = element.encode() if isinstance(element, str) else bytes(element)
            parts.append(_BYTES_LENGTH.pack(len(data)))
            parts.append(data)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _json_values(array: np.ndarray, name: str) -> list[Any]:
    values = array.reshape(-1).tolist()
    if array.dtype.kind in "OSU":
        try:
            return [value.decode() if isinstance(value, bytes) else str(value) for value in values]
        except UnicodeDecodeError as exc:
            raise InferenceInputError(
                f"output {name!r} holds bytes that are not UTF-8 text; ask for it with binary_data true"
            ) from exc
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        # JSON has no NaN or Infinity (a bare NaN is invalid JSON that strict clients reject): the
        # binary tensor extension carries them exactly
        raise InferenceInputError(
            f"output {name!r} holds NaN or Infinity, which JSON cannot carry; ask for it as binary "
            "(parameters binary_data_output true, or binary_data true on the output)"
        )
    return values
