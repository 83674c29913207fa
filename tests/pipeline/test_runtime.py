"""Stage processes on torch.distributed (gloo, 127.0.0.1): same answers as one process, measured
timelines and activation memory, and failures that stop every stage with one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from hone.errors import ExecutionError, OptionError
from hone.pipeline import PipelineResult, resolve, run_pipeline, write_trace

pytestmark = pytest.mark.slow

MODELS = Path(__file__).parent / "models.py"

ONNX_CHAIN = """
<ir_version: 8, opset_import: ["" : 17]>
chain (float[batch, 8] x) => (float[batch, 4] y) <float[8, 8] w1, float[8, 4] w2> {
    a = MatMul(x, w1)
    b = Tanh(a)
    c = MatMul(b, w1)
    d = Relu(c)
    y = MatMul(d, w2)
}
"""


def onnx_chain(folder: Path) -> Path:
    """ONNX_CHAIN with seeded weights, saved in ``folder``."""
    model = onnx.parser.parse_model(ONNX_CHAIN)
    rng = np.random.default_rng(0)
    for name, shape in (("w1", (8, 8)), ("w2", (8, 4))):
        model.graph.initializer.append(onnx.numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name))
    path = folder / "chain.onnx"
    onnx.save(model, path)
    return path


def source(factory: str, shape: str):  # noqa: ANN201 - a PipelineSource
    return resolve(f"{MODELS}:{factory}", input_shapes=[shape])


@pytest.fixture(scope="module")
def training_runs() -> dict[str, PipelineResult]:
    """tiny_stack trained one step per schedule: 2 stages, 4 micro-batches of 2."""
    return {
        schedule: run_pipeline(source("tiny_stack", "8,16,32"), stages=2, microbatches=4, batch=8,
                               schedule=schedule, mode="train", steps=2, timeout_s=60)
        for schedule in ("gpipe", "1f1b")
    }


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_training_matches_one_process_in_losses_and_gradients(
    training_runs: dict[str, PipelineResult], schedule: str
) -> None:
    result = training_runs[schedule]
    assert result.max_abs_error_vs_single_process == 0.0  # the losses, bit for bit
    assert result.max_grad_rel_error_vs_single_process is not None
    assert result.max_grad_rel_error_vs_single_process <= 1e-6


def test_one_f_one_b_holds_fewer_micro_batches_and_less_activation_memory_than_gpipe(
    training_runs: dict[str, PipelineResult],
) -> None:
    gpipe, one = training_runs["gpipe"], training_runs["1f1b"]
    assert [s.peak_in_flight for s in gpipe.stages] == [4, 4]
    assert [s.peak_in_flight for s in one.stages] == [2, 1]
    assert one.stages[0].peak_activation_bytes < gpipe.stages[0].peak_activation_bytes
    # Per micro-batch the saved activations are the same, so the bytes scale with the count.
    ratio = gpipe.stages[1].peak_activation_bytes / one.stages[1].peak_activation_bytes
    assert ratio == pytest.approx(4.0, rel=0.01)


def test_a_step_records_each_action_and_its_bubble(training_runs: dict[str, PipelineResult]) -> None:
    result = training_runs["1f1b"]
    assert result.bubble_formula == pytest.approx(1 / 5)
    for stage, timeline in zip(result.stages, result.timeline):
        names = [e.name for e in timeline if e.category == "compute"]
        assert sorted(names) == sorted([f"F{m}" for m in range(4)] + [f"B{m}" for m in range(4)])
        assert 0 < stage.busy_ms <= result.step_ms
        assert stage.idle_ms == pytest.approx(result.step_ms - stage.busy_ms)
        assert 0 <= stage.bubble < 1
        assert all(0 <= e.start_ms <= e.end_ms <= result.step_ms + 1e-6 for e in timeline if e.category != "optimizer")
    # Only the second stage waits for activations; the first waits for gradients.
    assert any(e.category == "recv_wait" and e.name.startswith("recv F") for e in result.timeline[1])
    assert result.stages[0].link_bandwidth_gbps and result.stages[0].link_bandwidth_gbps > 0
    assert result.simulated_step_ms > 0


def test_the_trace_has_one_process_per_stage_with_its_actions(
    training_runs: dict[str, PipelineResult], tmp_path: Path
) -> None:
    path = write_trace(training_runs["gpipe"], tmp_path / "trace.json")
    events = json.loads(path.read_text())["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    assert {e["pid"] for e in spans} == {0, 1}
    assert sum(1 for e in spans if e["pid"] == 0 and e["cat"] == "compute") == 8
    assert all(e["dur"] >= 0 for e in spans)


def test_inference_over_three_stages_returns_exactly_the_single_process_outputs() -> None:
    # random_chain draws its weights from the global RNG: every stage must get the parent's.
    result = run_pipeline(source("random_chain", "8,8"), stages=3, microbatches=4, batch=8,
                          schedule="gpipe", mode="inference", steps=2, timeout_s=60)
    assert result.max_abs_error_vs_single_process == 0.0
    assert [len(s.blocks) for s in result.stages] and sum(len(s.blocks) for s in result.stages) == 5
    assert all(s.peak_in_flight == 1 for s in result.stages)
    assert result.bubble_formula == pytest.approx(2 / 6)


def test_an_onnx_graph_runs_as_stages_cut_at_single_tensors(tmp_path: Path) -> None:
    path = onnx_chain(tmp_path)
    result = run_pipeline(resolve(str(path)), stages=2, microbatches=2, batch=4, schedule="1f1b",
                          mode="inference", steps=2, timeout_s=60)
    assert result.max_abs_error_vs_single_process <= 1e-6
    assert sum(len(s.blocks) for s in result.stages) == 5


def test_a_stage_that_raises_stops_every_stage_with_one_line_naming_it() -> None:
    with pytest.raises(ExecutionError) as caught:
        run_pipeline(source("failing_chain", "4,8"), stages=2, microbatches=4, batch=4, steps=1, timeout_s=30)
    message = str(caught.value)
    assert "stage 1 of 2 failed at step 0, F2" in message
    assert "injected failure on the third micro-batch" in message
    assert "\n" not in message


def test_a_stage_that_hangs_times_the_others_out_instead_of_hanging_them() -> None:
    with pytest.raises(ExecutionError) as caught:
        run_pipeline(source("hanging_chain", "4,8"), stages=2, microbatches=2, batch=2, steps=1, timeout_s=3)
    message = str(caught.value)
    assert "stage 1 of 2 gave up waiting" in message
    assert "stage 0 never answered" in message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stages": 9}, r"--stages 9 is more than the 5 blocks"),
        ({"microbatches": 3, "batch": 8}, r"--batch 8 is not divisible by --microbatches 3.*use --batch 9"),
        ({"schedule": "interleaved", "microbatches": 2}, "hone pipeline simulate"),
        ({"backend": "mpi"}, "--backend 'mpi'"),
    ],
)
def test_bad_runs_are_refused_before_any_process_starts(kwargs: dict, message: str) -> None:
    arguments = {"stages": 2, "microbatches": 4, "batch": 8, **kwargs}
    with pytest.raises(OptionError, match=message):
        run_pipeline(source("random_chain", "8,8"), **arguments)


def test_an_onnx_graph_cannot_be_trained(tmp_path: Path) -> None:
    path = onnx_chain(tmp_path)
    with pytest.raises(OptionError, match="train with a torch source"):
        run_pipeline(resolve(str(path)), stages=2, microbatches=2, mode="train")


def test_a_model_with_several_inputs_is_refused_with_what_works() -> None:
    with pytest.raises(OptionError, match="minilm takes 3 inputs"):
        resolve("minilm")


def test_the_cli_runs_a_pipeline_and_writes_the_contract(cli, tmp_path: Path) -> None:  # noqa: ANN001
    json_path, trace_path = tmp_path / "run.json", tmp_path / "trace.json"
    result = cli("pipeline", f"{MODELS}:random_chain", "--input-shape", "8,8", "--stages", "2",
                 "--microbatches", "4", "--batch", "8", "--schedule", "gpipe", "--mode", "train",
                 "--steps", "2", "--json", str(json_path), "--trace", str(trace_path))
    assert result.exit_code == 0, result.stderr
    assert "bubble measured" in result.stdout
    data = json.loads(json_path.read_text())
    for key in ("stages", "step_ms", "bubble_measured", "bubble_formula", "max_abs_error_vs_single_process"):
        assert key in data
    for stage in data["stages"]:
        for key in ("blocks", "cost_ms", "busy_ms", "idle_ms", "bubble"):
            assert key in stage
    assert data["max_abs_error_vs_single_process"] == 0.0
    assert json.loads(trace_path.read_text())["traceEvents"]


def test_the_cli_refuses_more_stages_than_blocks_in_one_line(cli) -> None:  # noqa: ANN001
    result = cli("pipeline", f"{MODELS}:random_chain", "--input-shape", "8,8", "--stages", "6")
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--stages 6 is more than the 5 blocks" in lines[0]


def test_torchrun_starts_the_stages_and_rank_zero_reports(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    torchrun, hone = bin_dir / "torchrun", shutil.which("hone", path=str(bin_dir))
    assert torchrun.exists() and hone, "torchrun and hone are installed in the test environment"
    json_path = tmp_path / "run.json"
    completed = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", hone, "pipeline", f"{MODELS}:random_chain",
         "--input-shape", "8,8", "--stages", "2", "--microbatches", "4", "--batch", "8", "--mode", "train",
         "--steps", "2", "--timeout-s", "60", "--json", str(json_path)],
        capture_output=True, text=True, timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "stage 1 done; rank 0 reports the run" in completed.stdout
    data = json.loads(json_path.read_text())
    assert data["max_abs_error_vs_single_process"] == 0.0
    assert data["max_grad_rel_error_vs_single_process"] <= 1e-6
    assert [s["peak_in_flight"] for s in data["stages"]] == [2, 1]
