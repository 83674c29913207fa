"""The accuracy gate: does a candidate (quantized, pruned) still give the float model's answers?

Three ways to judge, chosen from what is known about the model:

- ``top1`` -- labels are known (the zoo's digits): top-1 accuracy of float and candidate on the
  labelled inputs; the budget caps the drop in points (default 0.5).
- ``agreement`` -- a classifier without labels (first output ``(batch, classes)``): the share of
  inputs where the candidate's argmax equals the float model's (default at least 99%).
- ``cosine`` -- anything else, e.g. embeddings: cosine similarity between the float and the
  candidate output per sample; the budget bounds its mean (default 0.995) and its minimum
  (default 0.98: one sentence may not be ruined for the sake of the average).

The inputs are the zoo's real data where there is some (digits' held-out split, minilm's
sentences), else ``samples`` inputs synthesized from the input specs. Float outputs are computed
once per plan and reused for every candidate.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import numpy as np

from hone.data import synthesize
from hone.errors import HoneError, OptionError
from hone.model import Model
from hone.runtime import Session, SessionConfig

logger = logging.getLogger(__name__)

METRICS = ("top1", "agreement", "cosine")
EVAL_BATCH = 50  # evaluation batch: large enough to be quick, small enough for resnet50's activations


@dataclass(frozen=True)
class Budget:
    """How much a candidate may differ from the float model; unset fields take the defaults."""

    max_top1_drop_points: float = 0.5
    min_agreement: float = 0.99
    min_cosine_mean: float = 0.995
    min_cosine_min: float | None = 0.98

    _KEYS = {"top1-drop": "max_top1_drop_points", "agreement": "min_agreement",
             "cosine-mean": "min_cosine_mean", "cosine-min": "min_cosine_min"}

    @classmethod
    def parse(cls, text: str | None) -> "Budget":
        """``"top1-drop=0.5,agreement=0.99,cosine-mean=0.995,cosine-min=0.98"`` (any subset)."""
        if not text:
            return cls()
        values: dict[str, float] = {}
        for part in text.split(","):
            key, _, number = part.strip().partition("=")
            try:  # the pattern lets through "1.2.3", "." or "e": float() has the last word
                value = float(number) if re.fullmatch(r"[0-9.eE+-]+", number.strip() or "x") else None
            except ValueError:
                value = None
            if key not in cls._KEYS or value is None:
                raise OptionError(
                    f"budget part {part.strip()!r} is not KEY=NUMBER with KEY one of {', '.join(cls._KEYS)} "
                    "(e.g. --budget top1-drop=0.5,cosine-mean=0.995)"
                )
            values[cls._KEYS[key]] = value
        return cls(**values)

    def describe(self, metric: str) -> str:
        if metric == "top1":
            return f"top-1 drop <= {self.max_top1_drop_points:g} points"
        if metric == "agreement":
            return f"top-1 agreement >= {self.min_agreement:.1%}"
        text = f"cosine mean >= {self.min_cosine_mean:g}"
        return text + (f", min >= {self.min_cosine_min:g}" if self.min_cosine_min is not None else "")


@dataclass
class AccuracyReport:
    """One candidate judged: the metric, its value for the float model and the candidate."""

    metric: str  # "top1" | "agreement" | "cosine"
    name: str  # what was measured, in words
    float_value: float  # top-1 accuracy for "top1"; 1.0 for agreement and cosine (the float model vs itself)
    candidate_value: float  # top-1 accuracy, agreement share, or cosine mean
    budget: str
    passed: bool
    samples: int
    cosine_min: float | None = None
    data: str = ""  # where the inputs came from


@dataclass
class EvalPlan:
    """The inputs, what to compare, and the float model's outputs on them."""

    metric: str
    feeds: list[dict[str, np.ndarray]]  # batches
    output_index: int
    output_name: str
    data: str
    labels: np.ndarray | None = None
    float_outputs: list[np.ndarray] = field(default_factory=list)  # per batch, the judged output
    threads: int | None = None

    @property
    def samples(self) -> int:
        return sum(len(next(iter(f.values()))) for f in self.feeds)


def plan_for(model: Model, *, samples: int = 200, seed: int = 1, threads: int | None = None,
             metric: str | None = None, batch: int = EVAL_BATCH) -> EvalPlan:
    """Inputs and metric for judging candidates of ``model`` (float outputs computed here).

    ``batch`` is how many samples each judged run takes. It matters for dynamic INT8, whose
    activation scale is computed per run over the whole batch (padding tokens included), so the
    same model is more accurate at batch 1 than in a large padded batch.
    """
    if batch < 1:
        raise OptionError(f"evaluation batch must be at least 1, got {batch}")
    if metric is not None and metric not in METRICS:
        raise OptionError(f"metric {metric!r} is unknown; choose one of: {', '.join(METRICS)}")
    real = _zoo_eval(model)
    if real is not None:
        inputs = real.inputs
        count = len(next(iter(inputs.values())))
        feeds = [{k: v[i:i + batch] for k, v in inputs.items()} for i in range(0, count, batch)]
        output_name = real.output_name or model.outputs[0].name
        chosen = metric or ("top1" if real.labels is not None else "cosine" if real.metric == "cosine"
                            else _metric_for(model, output_name))
        plan = EvalPlan(chosen, feeds, _output_index(model, output_name), output_name,
                        f"{real.description}", labels=real.labels, threads=threads)
    else:
        output_name = model.outputs[0].name
        feeds = []
        for start in range(0, samples, batch):
            size = min(batch, samples - start)
            feeds.append(synthesize(model.inputs, batch=size, dims=model.default_dims, seed=seed + start))
        plan = EvalPlan(metric or _metric_for(model, output_name), feeds, 0, output_name,
                        f"{samples} inputs synthesized from the input specs (no real data known)", threads=threads)
    if plan.metric == "top1" and plan.labels is None:
        raise OptionError("metric top1 needs labels; this model's data has none (use agreement or cosine)")
    plan.float_outputs = run_judged(model, plan)
    return plan


def run_judged(model: Model, plan: EvalPlan) -> list[np.ndarray]:
    """The judged output of ``model`` on every batch of the plan."""
    session = Session(model, SessionConfig(threads=plan.threads, optimization="all"))
    dtypes = {spec.name: spec.dtype for spec in model.inputs}  # fp16 models may take float16 inputs
    return [np.asarray(session.run({k: v.astype(dtypes.get(k, v.dtype), copy=False) for k, v in feeds.items()})
                       [plan.output_index], dtype=np.float32)
            for feeds in plan.feeds]


def judge(candidate: Model, plan: EvalPlan, budget: Budget) -> AccuracyReport:
    """Run ``candidate`` on the plan's inputs and compare with the float outputs under ``budget``."""
    produced = np.concatenate(run_judged(candidate, plan))
    reference = np.concatenate(plan.float_outputs)
    name = plan.output_name
    if plan.metric == "top1":
        assert plan.labels is not None
        float_top1 = float((reference.argmax(axis=-1) == plan.labels).mean() * 100)
        cand_top1 = float((produced.argmax(axis=-1) == plan.labels).mean() * 100)
        passed = float_top1 - cand_top1 <= budget.max_top1_drop_points + 1e-9
        return AccuracyReport("top1", f"top-1 accuracy (%) of {name!r} on labelled data", float_top1, cand_top1,
                              budget.describe("top1"), passed, len(produced), data=plan.data)
    if plan.metric == "agreement":
        agreement = float((produced.argmax(axis=-1) == reference.argmax(axis=-1)).mean())
        return AccuracyReport("agreement", f"top-1 agreement of {name!r} with the float model", 1.0, agreement,
                              budget.describe("agreement"), agreement >= budget.min_agreement - 1e-12,
                              len(produced), data=plan.data)
    cosines = _row_cosines(reference, produced)
    mean, low = float(cosines.mean()), float(cosines.min())
    passed = mean >= budget.min_cosine_mean and (budget.min_cosine_min is None or low >= budget.min_cosine_min)
    return AccuracyReport("cosine", f"cosine of {name!r} with the float model, per sample", 1.0, mean,
                          budget.describe("cosine"), passed, len(produced), cosine_min=low, data=plan.data)


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    return np.where(norms > 0, dots / np.maximum(norms, 1e-30), np.where(np.abs(a - b).max(axis=1) == 0, 1.0, 0.0))


def _metric_for(model: Model, output_name: str) -> str:
    """A 2-D float output with more than one column reads as class scores; anything else as embeddings."""
    spec = next((o for o in model.outputs if o.name == output_name), None)
    if spec is not None and len(spec.shape) == 2 and isinstance(spec.shape[1], int) and spec.shape[1] > 1 \
            and not _looks_like_embedding(output_name):
        return "agreement"
    return "cosine"


def _looks_like_embedding(name: str) -> bool:
    return any(word in name.lower() for word in ("embed", "hidden", "feature", "pool"))


def _output_index(model: Model, name: str) -> int:
    names = [o.name for o in model.outputs]
    if name not in names:
        raise OptionError(f"output {name!r} is not one of the model's outputs ({', '.join(names)})")
    return names.index(name)


def _zoo_eval(model: Model):
    from hone import zoo

    name = model.provenance.get("zoo")
    if not name:
        return None
    entry = zoo.get(name)
    if entry.eval_data is None:
        return None
    try:
        return entry.eval_data()
    except HoneError as exc:
        logger.warning("judging on synthesized inputs: %s", exc)
        return None
