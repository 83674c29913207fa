"""Inputs for running a model: concrete shapes from specs with symbolic dims, and seeded values.

Synthesized values follow each input's ``value_range`` when the model records one (zoo models and
models saved by hone do); otherwise integer inputs are guessed from their names (``*mask*`` -> ones,
``*type*``/``*segment*`` -> zeros, other ids -> small non-negative ints) and floats are N(0, 1).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from hone.errors import ShapeError
from hone.specs import TensorSpec

logger = logging.getLogger(__name__)

# Fallback sizes for symbolic dims nobody gave a value for, chosen by a hint in the dim's name.
_DIM_HINTS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("seq", "len", "token", "time"), 128),
    (("height", "width", "h", "w"), 224),
)
_FALLBACK_DIM = 1


def resolve_shape(spec: TensorSpec, *, batch: int, dims: Mapping[str, int]) -> tuple[int, ...]:
    """Concrete shape of ``spec``: the first symbolic dim (or one named 'batch') takes ``batch``."""
    shape: list[int] = []
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int) and dim > 0:
            shape.append(dim)
        elif isinstance(dim, str) and dim in dims:
            shape.append(int(dims[dim]))
        elif axis == 0 or dim == "batch":
            shape.append(batch)
        else:
            shape.append(_guess_dim(dim))
    return tuple(shape)


def _guess_dim(name: str | None) -> int:
    lowered = (name or "").lower()
    for hints, size in _DIM_HINTS:
        if any(lowered == h or (len(h) > 1 and h in lowered) for h in hints):
            logger.info("symbolic dim %r set to %d (give --dim %s=N to choose)", name, size, name)
            return size
    logger.warning("symbolic dim %r has no value; using %d (give --dim NAME=N)", name, _FALLBACK_DIM)
    return _FALLBACK_DIM


def check_batchable(specs: Sequence[TensorSpec], batch: int) -> None:
    """Refuse a batch size the model's fixed first dim cannot take."""
    for spec in specs:
        if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0 and spec.shape[0] != batch:
            raise ShapeError(
                f"input {spec.name!r} has a fixed batch dim of {spec.shape[0]}, so batch {batch} "
                f"cannot run; use --batch {spec.shape[0]} or export the model with a dynamic batch axis",
                input=spec.name,
                batch=batch,
            )


def synthesize(
    specs: Sequence[TensorSpec],
    *,
    batch: int = 1,
    dims: Mapping[str, int] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Seeded inputs for every spec, same values for the same (specs, batch, dims, seed)."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = resolve_shape(spec, batch=batch, dims=dims or {})
        feeds[spec.name] = _values(spec, shape, rng)
    return feeds


def _values(spec: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(spec.dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if np.issubdtype(dtype, np.integer):
        low, high = spec.value_range or _guess_int_range(spec.name)
        return rng.integers(int(low), int(high), size=shape).astype(dtype)
    logger.warning("input %r has dtype %s; synthesizing zeros", spec.name, dtype)
    return np.zeros(shape, dtype=dtype)


def _guess_int_range(name: str) -> tuple[int, int]:
    lowered = name.lower()
    if "mask" in lowered:
        return (1, 2)
    if "type" in lowered or "segment" in lowered or "position" in lowered:
        return (0, 1)
    return (0, 100)
