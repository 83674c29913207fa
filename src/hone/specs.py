"""Input and output specs: name, dtype, shape with symbolic dims, and how to synthesize values."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output.

    ``shape`` holds ints for fixed dims and strings for symbolic ones ("batch", "sequence"), or
    None for a dim with no name. ``value_range`` is ``(low, high)`` with ``high`` exclusive, used
    when synthesizing integer inputs (token ids in ``(0, vocab)``, masks as ``(1, 2)`` = all ones).
    """

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]
    value_range: tuple[float, float] | None = None

    @property
    def symbolic_dims(self) -> tuple[str, ...]:
        return tuple(d for d in self.shape if isinstance(d, str))

    def shape_text(self) -> str:
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"
