"""The KServe v2 tensor datatypes (the Open Inference Protocol's names) and their numpy dtypes.

The wire format's vocabulary: ``protocol`` (HTTP JSON and binary tensors) and ``grpc_api`` decode
and encode tensors with it, ``model_runner`` describes a model's inputs and outputs in it.
``BYTES`` holds strings: numpy object, unicode or bytes arrays.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from hone.errors import InferenceInputError, OptionError

Datatype = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]
# Each KServe v2 / Open Inference Protocol tensor datatype and its numpy dtype (BYTES: strings).
_TABLE: tuple[tuple[Datatype, np.dtype], ...] = (
    ("BOOL", np.dtype(np.bool_)),
    ("UINT8", np.dtype(np.uint8)),
    ("UINT16", np.dtype(np.uint16)),
    ("UINT32", np.dtype(np.uint32)),
    ("UINT64", np.dtype(np.uint64)),
    ("INT8", np.dtype(np.int8)),
    ("INT16", np.dtype(np.int16)),
    ("INT32", np.dtype(np.int32)),
    ("INT64", np.dtype(np.int64)),
    ("FP16", np.dtype(np.float16)),
    ("FP32", np.dtype(np.float32)),
    ("FP64", np.dtype(np.float64)),
    ("BYTES", np.dtype(np.object_)),
)
# Keyed by any string, as the names arrive off the wire.
KSERVE_DATATYPES: dict[str, np.dtype] = dict(_TABLE)
_DATATYPE_BY_DTYPE_NAME: dict[str, Datatype] = {dtype.name: name for name, dtype in _TABLE}
# Array kinds that hold strings: object, unicode, bytes (onnxruntime takes each for a string input).
STRING_KINDS = "OUS"


def datatype_from_dtype(dtype: np.dtype | str) -> Datatype:
    """The KServe datatype name of a numpy dtype (``float32`` -> ``FP32``; strings -> ``BYTES``)."""
    resolved = np.dtype(dtype)
    if resolved.kind in STRING_KINDS:
        return "BYTES"
    try:
        return _DATATYPE_BY_DTYPE_NAME[resolved.name]
    except KeyError:
        raise OptionError(
            f"dtype {resolved.name} has no KServe datatype; serveable dtypes: "
            f"{', '.join(_DATATYPE_BY_DTYPE_NAME)}"
        ) from None


def dtype_from_datatype(datatype: str) -> np.dtype:
    """The numpy dtype of a KServe datatype name (``FP32`` -> ``float32``), or a 400-class error."""
    try:
        return KSERVE_DATATYPES[datatype]
    except KeyError:
        raise InferenceInputError(
            f"datatype {datatype!r} is unknown; use one of: {', '.join(KSERVE_DATATYPES)}",
            datatype=datatype,
        ) from None
