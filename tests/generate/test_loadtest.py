"""The load test's summary: percentiles from the clients' own timings."""

from __future__ import annotations

import pytest

from hone.generate.loadtest import Timing, summarize


def test_ttft_after_start_leaves_out_each_clients_first_request_only() -> None:
    # 2 clients: the two sent first met the start burst (100 and 90 ms to the first token)
    timings = [
        Timing(sent=0.000, tokens=[0.100, 0.101]),
        Timing(sent=0.001, tokens=[0.091, 0.093]),
        Timing(sent=0.102, tokens=[0.112, 0.114]),  # 10 ms
        Timing(sent=0.094, tokens=[0.114]),  # 20 ms
    ]
    level = summarize(2, timings, seconds=0.2)
    assert level.requests == 4 and level.output_tokens == 7
    assert level.ttft_p99_ms == pytest.approx(99.7, abs=0.1)  # the burst is in the all-requests p99
    assert level.ttft_p99_after_start_ms == pytest.approx(19.9, abs=0.1)
    assert level.itl_p50_ms == pytest.approx(2.0, abs=0.01)
