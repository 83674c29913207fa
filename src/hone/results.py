"""Results are plain dataclasses; this module turns any of them into JSON (the scriptable form
that every command writes with ``--json``). Non-finite floats become null so the JSON is strict.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from hone.paths import ensure_writable


def to_jsonable(value: Any) -> Any:
    """Recursively convert dataclasses, numpy values, paths and enums to JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        # Derived properties that readers need (e.g. ``passed``) are included too.
        for name in ("passed", "max_abs_error"):
            attribute = getattr(type(value), name, None)
            if isinstance(attribute, property):
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
