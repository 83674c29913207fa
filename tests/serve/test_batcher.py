"""The dynamic batcher: how batches form, what each request gets back, and how failures stay contained.

Requests pile up deterministically by holding the runner's only instance busy (``hold``) while
they are submitted, then releasing it; no test depends on how fast anything runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from serve_models import (
    BATCH_SUM_TEXT,
    POISON,
    RECORDER_TEXT,
    WIDTH_TEXT,
    RecordingRunner,
    load_model,
    request,
)

from hone.errors import (
    ExecutionError,
    InferenceExecutionError,
    InferenceInputError,
    ModelNotReadyError,
    OptionError,
    QueueFullError,
    RequestTimeoutError,
    ServerShuttingDownError,
)
from hone.serve.batcher import Batcher, BatcherStats
from hone.serve.config import BatchConfig
from hone.serve.model_runner import ModelRunner

Scenario = Callable[[Batcher, RecordingRunner], Awaitable[object]]
# Event-loop turns within which the scheduler takes a request it need not wait for (it takes 2).
SCHEDULER_TURNS = 20


@pytest.fixture(scope="module")
def recorder_model(tmp_path_factory: pytest.TempPathFactory):
    return load_model(RECORDER_TEXT, tmp_path_factory.mktemp("models"), "recorder")


def make_runner(model, max_batch_size: int) -> RecordingRunner:
    return RecordingRunner(model, max_batch_size=max_batch_size)


def serve(runner: RecordingRunner, scenario: Scenario, **config: object) -> object:
    """Run ``scenario`` against a started batcher on a fresh event loop, then stop it."""
    batch_config = BatchConfig(max_batch_size=runner.max_batch_size, **config)  # type: ignore[arg-type]

    async def main() -> object:
        batcher = Batcher(runner, batch_config)
        await batcher.start()
        try:
            return await scenario(batcher, runner)
        finally:
            runner.release()
            await batcher.stop()

    return asyncio.run(main())


async def pile_up(
    batcher: Batcher,
    runner: RecordingRunner,
    requests: Sequence[dict],
    priorities: Sequence[int] = (),
    first_rows: int = 1,
) -> tuple[asyncio.Task, list[asyncio.Task]]:
    """Occupy the instance with request 0, queue ``requests`` behind it, return all their tasks.

    Request 0 runs once its batch closes: at once when ``first_rows`` fills max_batch_size, else
    after max_queue_delay_ms.
    """
    runner.hold()
    first = asyncio.create_task(batcher.submit(request(0, rows=first_rows)))
    assert await asyncio.to_thread(runner.started.wait, 10), "request 0 never reached the runner"
    tasks = []
    for index, feeds in enumerate(requests):
        priority = priorities[index] if priorities else 0
        tasks.append(asyncio.create_task(batcher.submit(feeds, priority=priority)))
    while batcher.stats.queue_depth < len(requests):
        await asyncio.sleep(0)
    return first, tasks


def test_concurrent_single_sample_requests_form_batches_up_to_max_batch_size(recorder_model) -> None:
    runner = make_runner(recorder_model, max_batch_size=4)
    reference = ModelRunner(recorder_model, "reference", threads=1)
    feeds = [request(i) for i in range(1, 11)]

    async def scenario(batcher: Batcher, runner: RecordingRunner):
        first, tasks = await pile_up(batcher, runner, feeds)
        runner.release()
        await first
        return await asyncio.gather(*tasks), batcher.stats

    results, stats = serve(runner, scenario, max_queue_delay_ms=1.0)
    assert runner.batches == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    assert stats.batch_sizes == {1: 1, 4: 2, 2: 1}
    for feed, result, size in zip(feeds, results, [4] * 8 + [2] * 2):
        np.testing.assert_allclose(result["y"], reference.run(feed)["y"], rtol=1e-6, atol=1e-6)
        assert result["rows"].tolist() == [[size]]


def test_requests_of_several_samples_get_back_exactly_their_rows(recorder_model) -> None:
    runner = make_runner(recorder_model, max_batch_size=8)
    reference = ModelRunner(recorder_model, "reference", threads=1)
    feeds = [request(1, rows=2), request(2, rows=3), request(3, rows=1), request(4, rows=2)]

    async def scenario(batcher: Batcher, runner: RecordingRunner):
        first, tasks = await pile_up(batcher, runner, feeds)
        runner.release()
        await first
        return await asyncio.gather(*tasks)

    results = serve(runner, scenario, max_queue_delay_ms=1.0)
    assert runner.batches[1] == [1, 1, 2, 2, 2, 3, 4, 4]
    for feed, result in zip(feeds, results):
        assert result["y"].shape == (len(feed["x"]), 4)
        np.testing.assert_allclose(result["y"], reference.run(feed)["y"], rtol=1e-6, atol=1e-6)
        assert (result["rows"] == 8).all()


def test_a_request_is_never_split_so_the_batch_closes_before_it(recorder_model) -> None:
    runner = make_runner(recorder_model, max_batch_size=4)
    feeds = [request(1, rows=3), request(2, rows=2), request(3, rows=2)]

    async def scenario(batcher: Batcher, runner: RecordingRunner):
        first, tasks = await pile_up(batcher, runner, feeds)
        runner.release()
        await first
        await asyncio.gather(*tasks)

    serve(runner, scenario, max_queue_delay_ms=1.0)
    assert runner.batches[1:] == [[1, 1, 1], [2, 2, 3, 3]]


def test_requests_run_in_arrival_order_within_a_priority(recorder_model) -> None:
    runner = make_runner(recorder_model, max_batch_size=2)

    async def scenario(batcher: Batcher, runner: RecordingRunner):
        first, tasks = await pile_up(batcher, runner, [request(i) for i in range(1, 8)])
        runner.release()
        await asyncio.gather(first, *tasks)

    serve(runner, scenario, max_queue_delay_ms=1.0)
    assert [i for batch in runner.batches for i in batch] == list(range(8))


def test_priority_zero_is_served_before_priority_one_when_both_wait(recorder_model) -> None:
    runner = make_runner(recorder_model, max_batch_size=2)
    feeds = [request(1), request(2), request(3), request(4)]

    async def scenario(batcher: Batcher, runner: RecordingRunner):
        first, tasks = await pile_up(batcher, runner, feeds, priorities=[1, 1, 0, 0])
        runner.release()
        await asyncio.gather(first, *tasks)

    serve(runner, scenario, max_queue_delay_ms=1.0)
    assert runner.batches == [[0], [3, 4], [1, 2]]


def test_a_preferred_batch_size_closes_the_batch_before_max_batch_size(recorder_model) -> None:
    runner = make_runner(recorder_model, max_batch_size=8)

    async def scenario(batcher: Batcher, runner: RecordingRunner):
        first, tasks = await pile_up(batcher, runner, [request(i) for i in range(1, 6)])
        runner.release()
        await asyncio.gather(first, *tasks)

    serve(runner, scenario, max_queue_delay_ms=20.0, preferred_batch_sizes=(2,))
    assert runner.batches == [[0], [1, 2], [3, 4], [5]]


def test_different_non_batch_shapes_never_share_a_batch(tmp_path: Path) -> None:
    runner = make_runner(load_model(WIDTH_TEXT, tmp_path, "width"), max_batch_size=8)
    feeds = [request(1, width=4), request(2, width=6), request(3, width=4), request(4, width=6)]

    async def scenario(batcher: Batcher, runner: RecordingRunner):
        first, tasks = await pile_up(batcher, runner, feeds)
        runner.release()
        await first
        return await asyncio.gather(*tasks)

    results = serve(runner, scenario, max_queue_delay_ms=1.0)
    assert runner.batches[1:] == [[1, 3], [2, 4]]
    for feed, result in zip(feeds, results):
        np.testing.assert_allclose(result["total"], feed["x"].sum(axis=1, keepdims=True), rtol=1e-5)


def test_a_full_queue_refuses_at_once_while_the_queued_requests_complete(recorder_model) -> None:
    runner = make_runner(recorder_model, max_batch_size=4)

    async def scenario(batcher: Batcher, runner: RecordingRunner):
        first, tasks = await pile_up(batcher, runner, [request(1), request(2)])
        with pytest.raises(QueueFullError, match="max_queue_size 2") as refused:
            await batcher.submit(request(3))  # the runner is still held: this cannot wait for it
        runner.release()
        results = await asyncio.gather(first, *tasks)
        return refused.value, results, batcher.stats

    error, results, stats = serve(runner, scenario, max_queue_size=2, max_queue_delay_ms=1.0)
    assert error.http_status == 503
    assert len(results) == 3 and not runner.ran(3)
    assert (stats.request_success, stats.request_failure) == (3, 1)


def test_the_queue_bound_is_per_priority(recorder_model) -> None:
    runner = make_runner(recorder_model, max_batch_size=4)

    async def scenario(batcher: Batcher, runner: RecordingRunner):
        first, tasks = await pile_up(batcher, runner, [request(1)], priorities=[1])
        high = asyncio.create_task(batcher.submit(request(2), priority=0))
        with pytest.raises(QueueFullError, match="priority 1"):
            await batcher.submit(request(3), priority=1)
        runner.release()
        await asyncio.gather(first, high, *tasks)

    serve(runner, scenario, max_queue_size=1, max_queue_delay_ms=1.0)
    assert runner.ran(1) and runner.ran(2) and not runner.ran(3)


@pytest.mark.parametrize(
    ("request_timeout_ms", "config"),
    [(20.0, {}), (None, {"default_timeout_ms": 20.0}), (5000.0, {"default_timeout_ms": 20.0})],
    ids=["request-timeout", "default-timeout", "smaller-of-both"],
)
def test_a_request_whose_timeout_expires_in_the_queue_fails_and_never_runs(
    recorder_model, request_timeout_ms: float | None, config: dict
) -> None:
    runner = make_runner(recorder_model, max_batch_size=4)

    async def scenario(batcher: Batcher, runner: RecordingRunner):
        first, _ = await pile_up(batcher, runner, [])
        with pytest.raises(RequestTimeoutError, match="did not run") as expired:
            # The runner is held: only the timeout can answer this (wait_for guards against a hang).
            await asyncio.wait_for(batcher.submit(request(1), timeout_ms=request_timeout_ms), 5)
        runner.release()
        await first
        await batcher.submit(request(2))
        return expired.value, batcher.stats

    error, stats = serve(runner, scenario, max_queue_delay_ms=1.0, **config)
    assert error.http_status == 503 and error.context["timeout_ms"] == 20.0
    assert not runner.ran(1) and runner.ran(2)
    assert stats.queue_depth == 0 and stats.request_failure == 1


def test_a_failing_batch_is_retried_one_by_one_so_only_the_guilty_request_fails(recorder_model) -> None:
    runner = make_runner(recorder_model, max_batch_size=2)

    async def scenario(batcher: Batcher, runner: RecordingRunner):
        first, tasks = await pile_up(batcher, runner, [request(POISON), request(1), request(2), request(3)])
        runner.release()
        return await asyncio.gather(first, *tasks, return_exceptions=True)

    results = serve(runner, scenario, max_queue_delay_ms=1.0)
    assert runner.batches == [[0], [POISON, 1], [POISON], [1], [2, 3]]
    failed = results[1]
    assert isinstance(failed, InferenceExecutionError) and isinstance(failed, ExecutionError)
    assert "poisoned batch" in str(failed) and "batch of" not in str(failed)
    assert isinstance(failed.__cause__, RuntimeError)
    assert failed.http_status == 500
    for index, answered in [(0, results[0]), (1, results[2]), (2, results[3]), (3, results[4])]:
        assert isinstance(answered, dict) and set(answered) == {"y", "rows"}, index
    assert float(results[2]["rows"].reshape(-1)[0]) == 1.0  # request 1's own answer, not its batch mate's


def test_a_batch_whose_output_loses_the_batch_dim_fails_quoting_both(tmp_path: Path) -> None:
    runner = make_runner(load_model(BATCH_SUM_TEXT, tmp_path, "batch_sum"), max_batch_size=4)

    async def scenario(batcher: Batcher, runner: RecordingRunner):
        with pytest.raises(InferenceExecutionError, match="'total' with 1 rows for a batch of 3 samples"):
            await batcher.submit(request(1, rows=3))
        return await batcher.submit(request(2, rows=1))  # one sample, one row: the batcher goes on

    result = serve(runner, scenario, max_queue_delay_ms=0.0)
    assert result["total"].shape == (1, 8)


def test_stop_answers_every_accepted_request_and_refuses_new_ones(recorder_model) -> None:
    runner = make_runner(recorder_model, max_batch_size=2)

    async def scenario(batcher: Batcher, runner: RecordingRunner):
        first, tasks = await pile_up(batcher, runner, [request(i) for i in range(1, 6)], first_rows=2)
        stopping = asyncio.create_task(batcher.stop())
        await asyncio.sleep(0)
        with pytest.raises(ServerShuttingDownError, match="shutting down"):
            await batcher.submit(request(9))
        runner.release()
        await asyncio.wait_for(stopping, 10)  # far below the delay: draining must not wait for it
        return [task.result() for task in (first, *tasks)], batcher.stats

    # A long delay: draining must send what is queued at once rather than wait for company.
    results, stats = serve(runner, scenario, max_queue_delay_ms=60_000.0)
    assert len(results) == 6 and all(set(result) == {"y", "rows"} for result in results)
    assert sorted(i for batch in runner.batches for i in batch) == [0, 0, 1, 2, 3, 4, 5]
    assert (stats.request_success, stats.request_failure, stats.in_flight) == (6, 1, 0)


def test_with_batching_off_every_request_runs_alone(recorder_model) -> None:
    runner = make_runner(recorder_model, max_batch_size=0)

    async def scenario(batcher: Batcher, runner: RecordingRunner):
        first, tasks = await pile_up(batcher, runner, [request(i) for i in range(1, 5)])
        runner.release()
        return await asyncio.gather(first, *tasks), batcher.stats

    results, stats = serve(runner, scenario, max_queue_delay_ms=5.0)
    assert runner.batches == [[0], [1], [2], [3], [4]]
    assert all(result["rows"].tolist() == [[1]] for result in results)
    assert stats.batch_sizes == {1: 5} and stats.execution_count == 5


def test_a_client_that_goes_away_takes_its_request_out_of_the_queue(recorder_model) -> None:
    runner = make_runner(recorder_model, max_batch_size=4)

    async def scenario(batcher: Batcher, runner: RecordingRunner):
        first, (leaving, staying) = await pile_up(batcher, runner, [request(1), request(2)])
        leaving.cancel()
        await asyncio.sleep(0)
        runner.release()
        await asyncio.gather(first, staying)
        return batcher.stats

    stats = serve(runner, scenario, max_queue_delay_ms=1.0)
    assert not runner.ran(1) and runner.ran(2)
    assert (stats.request_success, stats.request_failure, stats.queue_depth) == (2, 1, 0)


@pytest.mark.parametrize(
    ("feeds", "options", "message"),
    [
        (request(1, rows=5), {}, "takes 1 to 4 samples per request"),
        (request(1), {"priority": 2}, "priority must be an integer from 0"),
        (request(1), {"priority": -1}, "priority must be an integer from 0"),
        (request(1), {"timeout_ms": 0}, "timeout must be a number of milliseconds above 0"),
        (request(1), {"timeout_ms": float("nan")}, "timeout must be a number"),
        ({"x": np.zeros((1, 8), np.float64)}, {}, "must be FP32, got FP64"),
    ],
    ids=["over-max-batch", "priority-too-low", "negative-priority", "zero-timeout", "nan-timeout", "dtype"],
)
def test_bad_requests_are_refused_at_submit_and_never_queued(
    recorder_model, feeds: dict, options: dict, message: str
) -> None:
    runner = make_runner(recorder_model, max_batch_size=4)

    async def scenario(batcher: Batcher, runner: RecordingRunner):
        with pytest.raises(InferenceInputError, match=message) as refused:
            await batcher.submit(feeds, **options)
        return refused.value, batcher.stats

    error, stats = serve(runner, scenario)
    assert error.http_status == 400
    assert runner.batches == [] and stats.request_failure == 1


def test_submit_before_start_says_the_model_is_not_ready(recorder_model) -> None:
    batcher = Batcher(make_runner(recorder_model, max_batch_size=4), BatchConfig(max_batch_size=4))
    with pytest.raises(ModelNotReadyError, match="not started"):
        asyncio.run(batcher.submit(request(1)))


def test_the_batcher_and_runner_must_agree_on_max_batch_size(recorder_model) -> None:
    with pytest.raises(OptionError, match=r"max_batch_size \(8\) must equal the runner's \(4\)"):
        Batcher(make_runner(recorder_model, max_batch_size=4), BatchConfig(max_batch_size=8))


class RecordingObserver:
    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []
        self.requests: list[bool] = []

    def on_batch(self, size: int, queue_ns: Sequence[int], compute_ns: int) -> None:
        assert compute_ns > 0 and all(ns >= 0 for ns in queue_ns)
        self.batches.append((size, len(queue_ns)))

    def on_request(self, success: bool, latency_ns: int) -> None:
        assert latency_ns >= 0
        self.requests.append(success)


def test_stats_and_the_observer_count_every_batch_and_request(recorder_model) -> None:
    runner = make_runner(recorder_model, max_batch_size=4)
    observer = RecordingObserver()

    async def main() -> BatcherStats:
        batcher = Batcher(runner, BatchConfig(max_batch_size=4, max_queue_delay_ms=1.0), observer=observer)
        await batcher.start()
        first, tasks = await pile_up(batcher, runner, [request(1, rows=2), request(2), request(3)])
        with pytest.raises(InferenceInputError):
            await batcher.submit(request(4, rows=9))
        runner.release()
        await asyncio.gather(first, *tasks)
        await batcher.stop()
        return batcher.stats

    stats = asyncio.run(main())
    assert observer.batches == [(1, 1), (4, 3)]
    assert observer.requests.count(True) == 4 and observer.requests.count(False) == 1
    assert (stats.request_success, stats.request_failure) == (4, 1)
    assert (stats.execution_count, stats.inference_count, stats.batch_sizes) == (2, 5, {1: 1, 4: 1})
    assert stats.queue_ns > 0 and stats.compute_infer_ns > 0 and stats.success_ns > 0
    assert stats.compute_ns == stats.compute_input_ns + stats.compute_infer_ns + stats.compute_output_ns
    assert stats.last_inference_ms > 0 and (stats.queue_depth, stats.in_flight) == (0, 0)


def test_sequential_requests_do_not_wait_for_company_but_overlapping_ones_do(recorder_model) -> None:
    """A lone client's requests go at once even with a long delay; a request that arrives while
    another runs waits for company, so two overlapping clients still form batches of two."""
    runner = make_runner(recorder_model, max_batch_size=4)

    async def sequential(batcher: Batcher, runner: RecordingRunner):
        runner.release()
        waited = []
        for index in range(3):
            answer = asyncio.create_task(batcher.submit(request(index)))
            for _ in range(SCHEDULER_TURNS):  # admission and the scheduler's turn; no clock involved
                await asyncio.sleep(0)
            if batcher.stats.queue_depth:  # it waits for company (stop() drains it, at once)
                waited.append(index)
                break
            await answer
        return waited

    # An hour's delay: a request that waited for company would still be queued after the turns.
    assert serve(runner, sequential, max_queue_delay_ms=3_600_000.0) == []
    assert runner.batches == [[0], [1], [2]]

    async def overlapping(batcher: Batcher, runner: RecordingRunner):
        # Two clients, each sending its next request when answered: after the first batch every
        # request overlaps the other client's, so they wait (here up to 0.3 s) and pair up.
        async def client(first: int) -> None:
            for index in range(first, first + 6, 2):
                await batcher.submit(request(index))

        await asyncio.gather(client(10), client(11))

    serve(runner, overlapping, max_queue_delay_ms=300.0)
    assert runner.batches[3:] == [[10, 11], [12, 13], [14, 15]]
