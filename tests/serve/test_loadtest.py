"""The serving stage's closed-loop load test: every request answered, batching visible, bounded."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_models import TWO_INPUTS_TEXT, save_model

from hone.report.terminal import batch_mean
from hone.serve.config import BatchConfig
from hone.serve.loadtest import load_test
from hone.sources import load


def test_a_load_test_answers_every_request_and_batches_concurrent_ones(tmp_path: Path) -> None:
    save_model(TWO_INPUTS_TEXT, tmp_path / "pair.onnx")
    result = load_test(
        load(tmp_path / "pair.onnx"), artifact="pair", concurrencies=(1, 8), seconds_per_level=0.2, threads=1,
        config=BatchConfig(max_batch_size=8, max_queue_delay_ms=2.0),
    )
    assert (result.artifact, result.max_batch_size) == ("pair", 8)
    single, eight = result.levels
    assert (single.concurrency, eight.concurrency) == (1, 8)
    for level in result.levels:
        assert level.requests > 0 and level.failures == 0
        assert 0 < level.p50_ms <= level.p99_ms
        assert sum(size * count for size, count in level.batch_sizes.items()) == level.requests
    assert set(single.batch_sizes) == {1}  # one client: nothing to batch with
    assert batch_mean(eight.batch_sizes) > 1


@pytest.mark.parametrize(("options", "message"), [
    ({"seconds_per_level": 0}, "seconds_per_level must be positive"),
    ({"concurrencies": (0,)}, "concurrencies must be at least 1"),
])
def test_load_test_options_are_checked_before_any_work(tmp_path: Path, options: dict, message: str) -> None:
    save_model(TWO_INPUTS_TEXT, tmp_path / "pair.onnx")
    with pytest.raises(ValueError, match=message):
        load_test(load(tmp_path / "pair.onnx"), artifact="pair", **options)
