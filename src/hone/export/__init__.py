"""Export a Model for a deployment target. Today: ``onnx`` (the model as loaded, unchanged).
The web and edge bundles join here as targets of the same call."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from hone.errors import OptionError
from hone.info import describe
from hone.model import Model
from hone.paths import ensure_writable

TARGETS = ("onnx",)


@dataclass
class ExportResult:
    model: str
    target: str
    path: str
    size_bytes: int


def export(model: Model, output: str | os.PathLike[str], *, target: str = "onnx", force: bool = False) -> ExportResult:
    if target not in TARGETS:
        raise OptionError(f"export target {target!r} is unknown; choose one of: {', '.join(TARGETS)}")
    if model.source_kind == "onnx" and model.path is not None and not model.steps:
        path, size = _copy_unchanged(model.path, Path(output), force=force)
    else:
        path = model.save(output, force=force)
        size = path.stat().st_size
        data_file = Path(str(path) + ".data")
        if data_file.exists():
            size += data_file.stat().st_size
    return ExportResult(model=model.name, target=target, path=str(path), size_bytes=size)


def _copy_unchanged(source: Path, output: Path, *, force: bool) -> tuple[Path, int]:
    """Byte-identical copy of an .onnx file and its external data files (same relative names)."""
    from hone.model import load_onnx_file

    data_files = describe(load_onnx_file(source)).external_data_files
    target = ensure_writable(output, force=force)
    copies = [(source, target)]
    for location in data_files:
        copies.append((source.parent / location, ensure_writable(target.parent / location, force=force)))
    size = 0
    for origin, destination in copies:
        if origin.resolve() != destination.resolve():
            shutil.copyfile(origin, destination)
        size += destination.stat().st_size
    return target, size
