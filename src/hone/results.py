"""Results are plain dataclasses; this module turns any of them into JSON (the scriptable form
that every command writes with ``--json``). Non-finite floats become null so the JSON is strict.

What results share is stated as protocols, not as names this module knows: a ``Verdict`` (a result
that judges something: ``passed`` is True, False, or None when nothing was judged) has its
``passed`` in the JSON; ``Noted`` results carry the notes a user should read. A result type whose
readers need another derived value lists its properties in ``JSON_PROPERTIES``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from hone.paths import ensure_writable


@runtime_checkable
class Verdict(Protocol):
    """A result that judges something: whether it passed (None: it was not judged)."""

    @property
    def passed(self) -> bool | None: ...


@runtime_checkable
class Noted(Protocol):
    """A result with notes: what hone decided on the user's behalf and why, one line each."""

    notes: list[str]


class DerivedFields(Protocol):
    """A result type whose JSON includes these properties besides its fields."""

    JSON_PROPERTIES: ClassVar[tuple[str, ...]]


def json_properties(value: object) -> tuple[str, ...]:
    """The derived properties of ``value`` that its JSON includes: a Verdict's ``passed``, and the
    ``JSON_PROPERTIES`` its type declares."""
    names = ("passed",) if isinstance(value, Verdict) else ()
    declared = getattr(type(value), "JSON_PROPERTIES", ())
    return names + tuple(name for name in declared if name not in names)


def to_jsonable(value: Any) -> Any:
    """Recursively convert dataclasses, numpy values, paths and enums to JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for name in json_properties(value):
            data[name] = to_jsonable(getattr(value, name))
        return data
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


def dumps(result: Any) -> str:
    return json.dumps(to_jsonable(result), indent=2, allow_nan=False)


def write_json(result: Any, path: str | os.PathLike[str], *, force: bool = False) -> Path:
    target = ensure_writable(path, force=force)
    target.write_text(dumps(result) + "\n", encoding="utf-8")
    return target
