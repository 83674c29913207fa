"""ModelRunner: KServe metadata, request validation, the instance pool and warm-up."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from serve_models import FIXED_BATCH_TEXT, RECORDER_TEXT, TWO_INPUTS_TEXT, load_model, request

from hone import runtime
from hone.errors import InferenceInputError, OptionError
from hone.serve import model_runner as runner_module
from hone.serve.model_runner import ModelRunner, TensorMetadata, warm_up_batch_sizes


@pytest.fixture(scope="module")
def recorder_model(tmp_path_factory: pytest.TempPathFactory):
    return load_model(RECORDER_TEXT, tmp_path_factory.mktemp("models"), "recorder")


@pytest.fixture(scope="module")
def pair_runner(tmp_path_factory: pytest.TempPathFactory) -> ModelRunner:
    model = load_model(TWO_INPUTS_TEXT, tmp_path_factory.mktemp("pair"), "pair")
    return ModelRunner(model, "pair", max_batch_size=4, threads=1)


def test_the_runner_describes_its_tensors_in_kserve_terms(recorder_model) -> None:
    runner = ModelRunner(recorder_model, "recorder", "3", max_batch_size=8, threads=1)
    assert (runner.name, runner.version, runner.batching) == ("recorder", "3", True)
    assert runner.inputs == (TensorMetadata("x", "FP32", (-1, 8)),)
    assert runner.outputs == (TensorMetadata("y", "FP32", (-1, 4)), TensorMetadata("rows", "FP32", (-1, 1)))
    assert runner.inputs[0].dtype == np.float32


def pair(x_shape: tuple, ids_shape: tuple, ids_dtype: type = np.int64) -> dict[str, np.ndarray]:
    return {"x": np.zeros(x_shape, np.float32), "ids": np.zeros(ids_shape, ids_dtype)}


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        ({}, r"needs input\(s\) 'x', 'ids' too; its inputs are: x, ids"),
        ({**pair((1, 8), (1, 3)), "extra": np.zeros(1)}, r"has no input\(s\) 'extra'; its inputs are: x, ids"),
        (pair((1, 8), (1, 3), np.int32), "'ids' .* must be INT64, got INT32"),
        (pair((1, 8, 1), (1, 3)), r"shape \[-1, 8\] .* got \[1, 8, 1\]"),
        (pair((1, 7), (1, 3)), r"shape \[-1, 8\] .* got \[1, 7\]"),
        (pair((2, 8), (3, 3)), "share their first .* x has 2, ids has 3"),
        (pair((5, 8), (5, 3)), "1 to 4 samples .* carries 5"),
        (pair((0, 8), (0, 3)), "1 to 4 samples .* carries 0"),
        ({**pair((1, 8), (1, 3)), "x": [[0.0] * 8]}, "'x' .* must be an array, got list"),
    ],
    ids=["missing", "unknown", "dtype", "rank", "static-dim", "batch-disagrees", "over-max", "empty", "not-array"],
)
def test_validation_quotes_what_was_expected_and_what_came(
    pair_runner: ModelRunner, feeds: dict, message: str
) -> None:
    with pytest.raises(InferenceInputError, match=message):
        pair_runner.validate(feeds)


def test_validation_returns_the_sample_count_of_a_request(pair_runner: ModelRunner) -> None:
    assert pair_runner.validate(pair((3, 8), (3, 3))) == 3


def test_with_batching_off_a_request_counts_as_one_sample_whatever_its_rows(recorder_model) -> None:
    runner = ModelRunner(recorder_model, "recorder", max_batch_size=0, threads=1)
    assert not runner.batching and runner.validate(request(1, rows=40)) == 1


def test_batching_needs_a_dynamic_first_dim(tmp_path: Path) -> None:
    model = load_model(FIXED_BATCH_TEXT, tmp_path, "fixed")
    with pytest.raises(OptionError, match=r"input 'x' has shape \[1, 8\].*max_batch_size 0"):
        ModelRunner(model, "fixed", max_batch_size=8, threads=1)
    runner = ModelRunner(model, "fixed", max_batch_size=0, threads=1)
    assert runner.run({"x": np.ones((1, 8), np.float32)})["y"].shape == (1, 8)


def test_run_returns_outputs_by_name(recorder_model) -> None:
    runner = ModelRunner(recorder_model, "recorder", max_batch_size=4, threads=1)
    feeds = request(1, rows=2)
    outputs = runner.run(feeds)
    assert set(outputs) == {"y", "rows"}
    np.testing.assert_allclose(outputs["y"], np.maximum(feeds["x"] @ _weights(recorder_model), 0), rtol=1e-5)


def test_concurrent_runs_each_get_their_own_instance(
    recorder_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = ModelRunner(recorder_model, "recorder", instances=2, max_batch_size=4, threads=1)
    both_inside = threading.Barrier(2, timeout=10)
    sessions: list[int] = []
    real_run = runtime.Session.run

    def run_together(self: runtime.Session, feeds):  # type: ignore[no-untyped-def]
        sessions.append(id(self))
        both_inside.wait()  # breaks (and fails the test) unless two sessions run at the same time
        return real_run(self, feeds)

    monkeypatch.setattr(runtime.Session, "run", run_together)
    threads = [threading.Thread(target=runner.run, args=(request(i),)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(sessions)) == 2 and not both_inside.broken


def test_threads_per_instance_split_the_cores_unless_given(
    recorder_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "default_threads", lambda: 8)
    assert ModelRunner(recorder_model, "recorder", instances=3).threads == 2
    assert ModelRunner(recorder_model, "recorder", instances=16).threads == 1
    assert ModelRunner(recorder_model, "recorder", instances=2, threads=3).threads == 3


def test_warm_up_runs_every_batch_size_on_every_instance(
    recorder_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = ModelRunner(recorder_model, "recorder", instances=2, max_batch_size=5, threads=1)
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()
    real_run = runtime.Session.run

    def record(self: runtime.Session, feeds):  # type: ignore[no-untyped-def]
        with lock:
            seen.append((id(self), len(feeds["x"])))
        return real_run(self, feeds)

    monkeypatch.setattr(runtime.Session, "run", record)
    result = runner.warm_up()
    assert result.batch_sizes == (1, 2, 3, 4, 5) and result.instances == 2
    per_session: dict[int, list[int]] = {}
    for session, size in seen:
        per_session.setdefault(session, []).append(size)
    assert sorted(per_session.values()) == [[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]]


@pytest.mark.parametrize(
    ("max_batch_size", "sizes"),
    [(0, (1,)), (1, (1,)), (3, (1, 2, 3)), (64, tuple(range(1, 65))), (100, (1, 2, 4, 8, 16, 32, 64, 100))],
)
def test_warm_up_sizes_are_every_size_or_powers_of_two_above_64(max_batch_size: int, sizes: tuple) -> None:
    assert warm_up_batch_sizes(max_batch_size) == sizes


def test_warm_up_refuses_sizes_beyond_max_batch_size(recorder_model) -> None:
    runner = ModelRunner(recorder_model, "recorder", max_batch_size=4, threads=1)
    with pytest.raises(OptionError, match=r"from 1 to 4 .* got \[2, 8\]"):
        runner.warm_up([2, 8])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"instances": 0}, "instances must be an integer of at least 1"),
        ({"max_batch_size": -1}, "max_batch_size must be an integer of at least 0"),
    ],
)
def test_runner_options_outside_their_contract_are_refused(
    recorder_model, options: dict, message: str
) -> None:
    with pytest.raises(OptionError, match=message):
        ModelRunner(recorder_model, "recorder", threads=1, **options)


def _weights(model) -> np.ndarray:  # type: ignore[no-untyped-def]
    return model.ir.graph.initializers["w"].const_value.numpy()
