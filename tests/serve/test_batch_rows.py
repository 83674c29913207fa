"""batch_rows: which requests can share a batch, their inputs joined, and each one's output rows back."""

from __future__ import annotations

import numpy as np
import pytest

from hone.errors import InferenceExecutionError
from hone.serve.batch_rows import batch_key, concatenate, split_rows


def test_requests_share_a_batch_only_when_dtypes_and_non_batch_dims_agree() -> None:
    two = {"x": np.ones((2, 3), np.float32)}
    one = {"x": np.ones((1, 3), np.float32)}
    assert batch_key(two) == batch_key(one)
    assert batch_key(one) != batch_key({"x": np.ones((1, 5), np.float32)})
    assert batch_key(one) != batch_key({"x": np.ones((1, 3), np.float64)})


def test_inputs_are_joined_in_request_order_and_outputs_split_back_by_samples() -> None:
    feeds = [{"x": np.full((count, 2), index, np.float32)} for index, count in enumerate([2, 1, 3])]
    batch = concatenate(feeds)
    assert batch["x"][:, 0].tolist() == [0, 0, 1, 2, 2, 2]
    parts = split_rows({"y": batch["x"] * 10}, [2, 1, 3], "m")
    assert [part["y"][:, 0].tolist() for part in parts] == [[0, 0], [10], [20, 20, 20]]
    assert concatenate(feeds[:1]) is feeds[0]


def test_an_output_without_a_row_per_sample_fails_quoting_both_counts() -> None:
    with pytest.raises(InferenceExecutionError, match="'total' with 1 rows for a batch of 3 samples from 2"):
        split_rows({"total": np.zeros((1, 8))}, [1, 2], "m")
    with pytest.raises(InferenceExecutionError, match="'scalar' with no batch dim for a batch of 1 samples"):
        split_rows({"scalar": np.float32(1.0) * np.ones(())}, [1], "m")
