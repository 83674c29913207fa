"""Sample sets: a model's samples, each one feed as the model takes it, where they came from, and
their calibration/evaluation split.

A light module (numpy and the specs only), so that ``hone.model`` can hold a ``SampleSet`` without
importing ``hone.data``, which reads and invents the samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from hone.specs import TensorSpec, has_batch_axis

# Where samples came from: the user's --data, the zoo's data sets, or inputs invented from the graph.
SampleSource = Literal["data", "zoo", "invented"]


@dataclass
class SampleSet:
    """Samples for a model, each one feed exactly as the model takes it (its batch axis, when it has
    one, of size 1), and where they came from."""

    samples: list[dict[str, np.ndarray]]
    source: SampleSource
    description: str
    groups: list[str] | None = None  # per sample, what it came from (a photo); a split keeps groups whole
    # The zoo's own calibration/evaluation split, when it has one (indices into ``samples``).
    fixed_split: tuple[list[int], list[int]] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def split(self, calibration_share: float = 0.5) -> DataSplit:
        """Disjoint calibration and evaluation sets (one sample only: both get it, and the description says
        so)."""
        count = len(self.samples)
        if self.fixed_split is not None:
            calibration, evaluation = self.fixed_split
            how = "the zoo's own split"
        elif count == 1:
            calibration, evaluation = [0], [0]
            how = (
                "one sample only, used for both calibration and evaluation: give more samples for a fair gate"
            )
        elif self.groups is not None and len(set(self.groups)) > 1:
            names = list(dict.fromkeys(self.groups))
            cut = min(max(1, round(len(names) * calibration_share)), len(names) - 1)
            calibration_groups = set(names[:cut])
            calibration = [i for i, g in enumerate(self.groups) if g in calibration_groups]
            evaluation = [i for i, g in enumerate(self.groups) if g not in calibration_groups]
            how = (
                f"by source: {cut} of {len(names)} groups for calibration, the other {len(names) - cut} for"
                " evaluation"
            )
        else:
            cut = min(max(1, round(count * calibration_share)), count - 1)
            calibration, evaluation = list(range(cut)), list(range(cut, count))
            how = f"samples 1-{cut} for calibration, {cut + 1}-{count} for evaluation"
        return DataSplit(
            self._subset(calibration, "calibration"),
            self._subset(evaluation, "evaluation"),
            f"{len(calibration)} calibration / {len(evaluation)} evaluation samples ({how})",
        )

    def _subset(self, indices: list[int], role: str) -> SampleSet:
        groups = [self.groups[i] for i in indices] if self.groups is not None else None
        return SampleSet(
            [self.samples[i] for i in indices],
            self.source,
            f"{len(indices)} {role} samples of {self.description}",
            groups,
        )

    def batches(self, specs: Sequence[TensorSpec], batch: int) -> list[dict[str, np.ndarray]]:
        """The samples as feeds of up to ``batch`` each, joined on the batch axis where shapes allow."""
        if not self.samples:
            return []
        axes = {spec.name: spec.batch_axis for spec in specs}
        if batch <= 1 or not has_batch_axis(specs):
            return [dict(sample) for sample in self.samples]
        feeds: list[dict[str, np.ndarray]] = []
        current: list[dict[str, np.ndarray]] = []
        for sample in self.samples:
            if current and (len(current) == batch or not joinable(current[0], sample, axes)):
                feeds.append(join(current, axes))
                current = []
            current.append(sample)
        feeds.append(join(current, axes))
        return feeds


@dataclass
class DataSplit:
    calibration: SampleSet
    evaluation: SampleSet
    description: str


def joinable(
    a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], axes: Mapping[str, int | None]
) -> bool:
    """Whether samples ``a`` and ``b`` can share a batch: same rank, same dims off the batch axis (all
    dims for an input without one)."""
    for name, array in a.items():
        other = b[name]
        axis = axes.get(name)
        if array.ndim != other.ndim or (axis is None and array.shape != other.shape):
            return False
        if any(x != y for i, (x, y) in enumerate(zip(array.shape, other.shape, strict=False)) if i != axis):
            return False
    return True


def join(
    samples: Sequence[Mapping[str, np.ndarray]], axes: Mapping[str, int | None]
) -> dict[str, np.ndarray]:
    """``samples`` as one feed, concatenated on each input's batch axis."""
    if len(samples) == 1:
        return dict(samples[0])
    joined = {}
    for name in samples[0]:
        axis = axes.get(name)
        # An input without a batch axis is shared by the whole batch: the first sample's value.
        joined[name] = (
            samples[0][name] if axis is None else np.concatenate([s[name] for s in samples], axis=axis)
        )
    return joined


__all__ = ["DataSplit", "SampleSet", "SampleSource", "join", "joinable"]
