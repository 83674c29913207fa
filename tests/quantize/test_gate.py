"""The accuracy gate: budgets in text form, which metric a model is judged by, and the verdicts of
top-1, agreement and cosine on hand-made outputs whose values are known exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import hone
from hone.errors import OptionError
from hone.model import Model
from hone.quantize.gate import Budget, EvalPlan, judge, plan_for, run_all, run_judged

# Four samples of three classes; the last row is all zeros (its cosine is defined by equality).
INPUTS = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]], dtype=np.float32)

IDENTITY = """
<ir_version: 8, opset_import: ["" : 17]>
same (float[N, 3] x) => (float[N, 3] y) { y = Identity (x) }
"""
NEGATED = """
<ir_version: 8, opset_import: ["" : 17]>
negated (float[N, 3] x) => (float[N, 3] y) { y = Neg (x) }
"""
# Columns 0 and 1 swapped: argmax 0 <-> 1, class 2 unchanged.
SWAPPED = """
<ir_version: 8, opset_import: ["" : 17]>
swapped (float[N, 3] x) => (float[N, 3] y) <int64[3] perm = {1, 0, 2}> { y = Gather <axis = 1> (x, perm) }
"""
DOUBLED = """
<ir_version: 8, opset_import: ["" : 17]>
doubled (float[N, 3] x) => (float[N, 3] y) <float[1] two = {2.0}> { y = Mul (x, two) }
"""
SHIFTED = """
<ir_version: 8, opset_import: ["" : 17]>
shifted (float[N, 3] x) => (float[N, 3] y) <float[1] one = {1.0}> { y = Add (x, one) }
"""


def _model(text: str, tmp_path: Path) -> Model:
    proto = onnx.parser.parse_model(text)
    onnx.checker.check_model(proto, full_check=True)
    path = tmp_path / f"{proto.graph.name}.onnx"
    onnx.save(proto, path)
    return hone.load(path)


def _plan(metric: str, float_model: Model, labels: np.ndarray | None = None) -> EvalPlan:
    plan = EvalPlan(metric, [{"x": INPUTS[:2]}, {"x": INPUTS[2:]}], 0, "y", "hand-made", labels=labels, threads=1)
    plan.all_float_outputs = run_all(float_model, plan)
    plan.float_outputs = run_judged(float_model, plan)
    return plan


# --- Budget in text form ---------------------------------------------------------------------


def test_an_empty_budget_takes_every_default() -> None:
    assert Budget.parse(None) == Budget.parse("") == Budget()
    assert Budget() == Budget(max_top1_drop_points=0.5, min_agreement=0.98, min_cosine_mean=0.995, min_cosine_min=0.98,
                              max_channel_error=0.1, min_exact_match=0.99)


def test_a_budget_sets_only_the_keys_it_names() -> None:
    budget = Budget.parse("top1-drop=1.5, cosine-min=0.9")
    assert budget == Budget(max_top1_drop_points=1.5, min_cosine_min=0.9)
    assert Budget.parse("agreement=0.95,cosine-mean=1e-1") == Budget(min_agreement=0.95, min_cosine_mean=0.1)
    assert Budget.parse("top1-drop=-1").max_top1_drop_points == -1.0


@pytest.mark.parametrize(
    ("text", "bad_part"),
    [
        ("top1=1", "top1=1"),  # unknown key
        ("Agreement=0.9", "Agreement=0.9"),
        ("top1-drop", "top1-drop"),  # no value
        ("=0.5", "=0.5"),
        ("agreement=", "agreement="),
        ("agreement=abc", "agreement=abc"),
        ("agreement=nan", "agreement=nan"),
        ("agreement=0.9,,", ""),  # an empty part
        ("cosine-mean=1.2.3", "cosine-mean=1.2.3"),  # digits and dots, but no number
        ("cosine-min=.", "cosine-min=."),
        ("agreement=0.9,top1-drop=e", "top1-drop=e"),
    ],
)
def test_a_malformed_budget_is_one_option_error_that_quotes_the_part(text: str, bad_part: str) -> None:
    with pytest.raises(OptionError) as caught:
        Budget.parse(text)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"budget part {bad_part!r} is not KEY=NUMBER with KEY one of "
                              "top1-drop, agreement, cosine-mean, cosine-min")


@pytest.mark.parametrize(
    ("budget", "metric", "described"),
    [
        (Budget(), "top1", "top-1 drop <= 0.5 points"),
        (Budget(min_agreement=0.995), "agreement", "top-1 agreement >= 99.5%"),
        (Budget(), "cosine", "cosine mean >= 0.995, min >= 0.98"),
        (Budget(min_cosine_min=None), "cosine", "cosine mean >= 0.995"),
    ],
)
def test_a_budget_describes_itself_for_the_metric_in_use(budget: Budget, metric: str, described: str) -> None:
    assert budget.describe(metric) == described


# --- judging: exact values on hand-made outputs ----------------------------------------------


def test_top1_reports_both_accuracies_and_passes_at_exactly_the_allowed_drop(tmp_path: Path) -> None:
    labels = np.array([0, 1, 2, 0])  # the float model (argmax 0, 1, 2, 0) gets all 4 right
    plan = _plan("top1", _model(IDENTITY, tmp_path), labels)
    swapped = _model(SWAPPED, tmp_path)  # argmax 1, 0, 2, 0: 2 of 4 right, a drop of 50 points

    at_limit = judge(swapped, plan, Budget(max_top1_drop_points=50))
    assert (at_limit.metric, at_limit.float_value, at_limit.candidate_value) == ("top1", 100.0, 50.0)
    assert at_limit.passed and at_limit.samples == 4 and at_limit.data == "hand-made"
    assert at_limit.budget == "top-1 drop <= 50 points"
    assert not judge(swapped, plan, Budget(max_top1_drop_points=49.9)).passed


def test_agreement_is_the_share_of_samples_whose_argmax_matches_the_float_model(tmp_path: Path) -> None:
    plan = _plan("agreement", _model(IDENTITY, tmp_path))
    swapped = _model(SWAPPED, tmp_path)  # only the class-2 row keeps its argmax; the zero row's is 0 vs 0
    report = judge(swapped, plan, Budget(min_agreement=0.5))
    assert report.metric == "agreement"
    assert report.float_value == 1.0 and report.candidate_value == 0.5
    assert report.passed
    assert not judge(swapped, plan, Budget(min_agreement=0.51)).passed
    assert judge(_model(IDENTITY, tmp_path), plan, Budget(min_agreement=1.0)).candidate_value == 1.0


def test_cosine_bounds_both_the_mean_and_the_worst_sample(tmp_path: Path) -> None:
    plan = _plan("cosine", _model(IDENTITY, tmp_path))
    loose = 10.0  # the channel error (also judged for float outputs) is not what this test is about
    negated = judge(_model(NEGATED, tmp_path), plan, Budget(min_cosine_mean=-1, min_cosine_min=-1,
                                                            max_channel_error=loose))
    # rows 0-2 point the other way (-1); the zero row equals its float output (+1)
    assert negated.candidate_value == pytest.approx(-0.5) and negated.cosine_min == pytest.approx(-1.0)
    assert negated.passed
    assert not judge(_model(NEGATED, tmp_path), plan, Budget(min_cosine_mean=-1, min_cosine_min=-0.99,
                                                             max_channel_error=loose)).passed
    assert not judge(_model(NEGATED, tmp_path), plan, Budget(min_cosine_mean=-0.49, min_cosine_min=None,
                                                             max_channel_error=loose)).passed

    scaled = judge(_model(DOUBLED, tmp_path), plan, Budget(min_cosine_mean=1 - 1e-9, min_cosine_min=1 - 1e-9,
                                                           max_channel_error=loose))
    assert scaled.candidate_value == pytest.approx(1.0) and scaled.passed  # cosine ignores the scale
    # ... but the channel error does not: a doubled output is far outside each channel's range.
    strict = judge(_model(DOUBLED, tmp_path), plan, Budget(min_cosine_mean=1 - 1e-9, min_cosine_min=1 - 1e-9))
    assert not strict.passed and strict.metric == "channel-error" and strict.candidate_value > 0.1


def test_cosine_of_a_shifted_output_matches_numpy(tmp_path: Path) -> None:
    plan = _plan("cosine", _model(IDENTITY, tmp_path))
    report = judge(_model(SHIFTED, tmp_path), plan, Budget())
    shifted = INPUTS + 1
    expected = [float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) for a, b in zip(INPUTS[:3], shifted[:3])]
    expected.append(0.0)  # a zero float output against a non-zero candidate
    assert report.candidate_value == pytest.approx(np.mean(expected))
    assert report.cosine_min == pytest.approx(0.0)
    assert not report.passed
    assert report.name == "cosine of 'y' with the float model, per sample"


# --- plan_for: which metric, which inputs ----------------------------------------------------


def _graph_with_output(tmp_path: Path, output: str, shape: str) -> Model:
    """``x[N, 6] -> output`` of ``shape`` (``[N, W]`` or ``[N, 2, W]``), all-ones weights."""
    width = int(shape.rstrip("]").split(",")[-1])
    if shape.count(",") == 1:
        body, weights = f"{output} = MatMul (x, w)", {"w": np.ones((6, width), np.float32)}
    else:
        body = f"x3 = Reshape (x, s)\n {output} = MatMul (x3, w)"
        weights = {"w": np.ones((3, width), np.float32), "s": np.array([-1, 2, 3], np.int64)}
    proto = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 6] x) => ({shape} {output}) {{ {body} }}""")
    proto.graph.initializer.extend(numpy_helper.from_array(array, name) for name, array in weights.items())
    onnx.checker.check_model(proto, full_check=True)
    path = tmp_path / f"{output}.onnx"
    onnx.save(proto, path)
    return hone.load(path)


@pytest.mark.parametrize(
    ("output", "shape", "metric"),
    [
        ("logits", "float[N, 10]", "agreement"),  # class scores, no labels
        ("sentence_embedding", "float[N, 10]", "cosine"),  # named like an embedding
        ("pooled_features", "float[N, 10]", "cosine"),
        ("score", "float[N, 1]", "cosine"),  # one column is not a classifier
        ("tokens", "float[N, 2, 10]", "cosine"),  # 3-D
    ],
)
def test_a_model_without_real_data_is_judged_by_agreement_or_cosine_from_its_output(
    tmp_path: Path, output: str, shape: str, metric: str
) -> None:
    model = _graph_with_output(tmp_path, output, shape)
    plan = plan_for(model, samples=120, threads=1)
    assert plan.metric == metric
    assert plan.output_name == output and plan.labels is None
    assert [len(feeds["x"]) for feeds in plan.feeds] == [50, 50, 20]
    assert plan.samples == 120
    assert "120 inputs invented from the graph" in plan.data
    assert len(plan.float_outputs) == 3 and plan.float_outputs[2].shape[0] == 20


def test_synthesized_plans_are_seeded(tmp_path: Path) -> None:
    model = _graph_with_output(tmp_path, "logits", "float[N, 10]")
    first, second = plan_for(model, samples=30), plan_for(model, samples=30)
    np.testing.assert_array_equal(first.feeds[0]["x"], second.feeds[0]["x"])
    assert not np.array_equal(first.feeds[0]["x"], plan_for(model, samples=30, seed=2).feeds[0]["x"])


def test_the_metric_can_be_chosen_but_top1_needs_labels(tmp_path: Path) -> None:
    model = _graph_with_output(tmp_path, "logits", "float[N, 10]")
    assert plan_for(model, samples=10, metric="cosine").metric == "cosine"
    with pytest.raises(OptionError, match="metric top1 needs labels"):
        plan_for(model, samples=10, metric="top1")
    with pytest.raises(OptionError, match="metric 'mse' is unknown; choose one of: top1, agreement, cosine"):
        plan_for(model, samples=10, metric="mse")


def test_digits_is_judged_by_top1_on_its_labelled_held_out_split() -> None:
    from hone.zoo.digits import heldout_accuracy, load_split

    plan = plan_for(hone.load("digits_cnn"), threads=1)
    split = load_split()
    assert plan.metric == "top1"
    assert plan.samples == len(split.test_labels) == 450
    np.testing.assert_array_equal(plan.labels, split.test_labels)
    np.testing.assert_array_equal(np.concatenate([f["input"] for f in plan.feeds]), split.test_images)
    assert "held-out" in plan.data
    # The float model judged against itself reproduces the accuracy measured after training.
    report = judge(hone.load("digits_cnn"), plan, Budget())
    assert report.float_value == report.candidate_value == pytest.approx(100 * heldout_accuracy(), abs=1e-6)
    assert report.passed
