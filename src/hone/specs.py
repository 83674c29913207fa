"""Input and output specs: name, dtype, shape with symbolic dims, and how to synthesize values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output.

    ``shape`` holds ints for fixed dims and strings for symbolic ones ("batch", "sequence"), or
    None for a dim with no name. ``value_range`` is ``(low, high)`` with ``high`` exclusive, used
    when synthesizing integer inputs (token ids in ``(0, vocab)``, masks as ``(1, 2)`` = all ones).

    ``batch_axis`` is the axis that takes the batch (None: the model has no batch axis and runs
    one sample at a time); specs read from a graph get it from ``hone.infer_inputs``, the default 0
    is for specs written by hand. ``index_bounds`` are exclusive upper bounds on an integer
    input's values, each an int or the name of a symbolic dim (it indexes that dim somewhere in
    the graph); ``equal_to`` is a constant the graph compares the input with (an If's choice).
    """

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]
    value_range: tuple[float, float] | None = None
    batch_axis: int | None = 0
    index_bounds: tuple[int | str, ...] = ()
    equal_to: int | None = None

    @property
    def symbolic_dims(self) -> tuple[str, ...]:
        return tuple(d for d in self.shape if isinstance(d, str))

    def shape_text(self) -> str:
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"


def has_batch_axis(specs: Sequence[TensorSpec]) -> bool:
    """Whether any non-scalar input takes a batch (inputs without one are shared by the batch)."""
    return any(spec.batch_axis is not None for spec in specs if spec.shape)
