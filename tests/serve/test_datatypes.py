"""The KServe v2 datatypes: their numpy dtypes both ways, and the errors for names and dtypes without one."""

from __future__ import annotations

import numpy as np
import pytest

from hone.errors import InferenceInputError, OptionError
from hone.serve.datatypes import KSERVE_DATATYPES, datatype_from_dtype, dtype_from_datatype


@pytest.mark.parametrize("datatype", list(KSERVE_DATATYPES))
def test_kserve_datatypes_map_to_numpy_and_back(datatype: str) -> None:
    assert datatype_from_dtype(dtype_from_datatype(datatype)) == datatype


@pytest.mark.parametrize(("dtype", "datatype"), [("float32", "FP32"), (np.int64, "INT64"), ("<U4", "BYTES")])
def test_numpy_dtypes_get_their_kserve_names(dtype: object, datatype: str) -> None:
    assert datatype_from_dtype(dtype) == datatype


def test_an_unknown_datatype_is_a_bad_request_listing_the_known_ones() -> None:
    with pytest.raises(InferenceInputError, match="'FP8' is unknown; use one of: BOOL, .*FP32") as refused:
        dtype_from_datatype("FP8")
    assert refused.value.http_status == 400


def test_a_dtype_without_a_kserve_datatype_is_refused() -> None:
    with pytest.raises(OptionError, match="complex64 has no KServe datatype"):
        datatype_from_dtype(np.complex64)
