"""Where a Model comes from: ``load()`` takes an .onnx path, a zoo name, or a PyTorch factory
``path/to/file.py:factory`` and returns a hone Model.

It sits above ``hone.model`` (which reads .onnx files), ``hone.zoo`` (which hands out factories of
its modules and their data) and ``hone.torch_export`` (which exports a module to ONNX), and joins
them: a zoo model is exported once and cached in ``cache_dir() / "zoo"``, with its entry's
``metadata`` in the file's metadata_props; a factory is exported with a dynamic batch axis. Every
failure on the way in becomes one ``InputError`` line that says what to do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from hone import torch_export, zoo
from hone.errors import ModelNotFoundError, UnknownModelError
from hone.model import Model, load_onnx_file
from hone.paths import cache_dir
from hone.zoo.types import ZooModel

logger = logging.getLogger(__name__)


def load(
    source: str | os.PathLike[str] | Model,
    *,
    input_shapes: Sequence[str] | None = None,
) -> Model:
    """Load a model from an .onnx path, a zoo name, or ``file.py:factory`` (with ``input_shapes``).

    ``input_shapes`` are only used for factories: ``"1,3,224,224"`` or ``"name:1,3,224,224"``,
    one per input; the first dim of each becomes the dynamic batch axis.
    """
    if isinstance(source, Model):
        return source
    text = str(source)
    factory_ref = split_factory_ref(text)
    if factory_ref is not None:
        return load_factory(factory_ref[0], factory_ref[1], input_shapes or ())
    path = Path(text).expanduser()
    if path.exists():
        return load_onnx_file(path)
    if text in zoo.names():
        return load_zoo(text)
    if path.suffix.lower() == ".onnx" or os.sep in text:
        raise ModelNotFoundError(f"{text}: no such file; check the path", source=text)
    raise UnknownModelError(
        f"{text!r} is neither a file nor a zoo model; zoo models are: {', '.join(zoo.names())}",
        source=text,
    )


def split_factory_ref(text: str) -> tuple[str, str] | None:
    """``"dir/file.py:make"`` -> ``("dir/file.py", "make")``; anything else -> None."""
    head, sep, tail = text.rpartition(":")
    if sep and head.endswith(".py") and tail.isidentifier():
        return head, tail
    return None


def load_zoo(name: str) -> Model:
    """A built-in model: exported once to the cache, with its eager module available for baselines."""
    entry = zoo.get(name)
    onnx_path = cached_onnx(entry)
    model = load_onnx_file(onnx_path, name=entry.name, source=entry.name)
    specs_by_name = {s.name: s for s in entry.inputs}
    model.inputs = tuple(
        (
            replace(spec, value_range=specs_by_name[spec.name].value_range)
            if spec.name in specs_by_name
            else spec
        )
        for spec in model.inputs
    )
    model.source_kind = "zoo"
    model.default_dims = dict(entry.default_dims)
    measured = entry.measured_provenance() if entry.measured_provenance else {}
    model.provenance = {"zoo": entry.name, **entry.provenance, **measured, "onnx_cache": str(onnx_path)}
    model.torch_factory = entry.build_module
    return model


def load_factory(file: str, factory_name: str, input_shapes: Sequence[str]) -> Model:
    """Import ``file``, call ``factory_name()``, export the module, and return it as a hone Model."""
    exported = torch_export.export_factory(file, factory_name, input_shapes)
    model = load_onnx_file(
        exported.onnx_path, name=Path(file).expanduser().stem, source=f"{file}:{factory_name}"
    )
    model.source_kind = "torch"
    model.provenance = {"factory": f"{file}:{factory_name}", "exporter": "torch.onnx (TorchScript)"}
    model.torch_factory = exported.build
    return model


def cached_onnx(entry: ZooModel) -> Path:
    """The ONNX export of ``entry``, made on first use and kept in the user cache."""
    import torch

    folder = cache_dir() / "zoo"
    folder.mkdir(parents=True, exist_ok=True)
    torch_version = torch.__version__.split("+")[0]
    path = folder / f"{entry.name}-v{entry.version}{_metadata_tag(entry.metadata)}-torch{torch_version}.onnx"
    if path.exists():
        return path
    logger.info("exporting zoo model %s to %s (first use)", entry.name, path)
    partial = path.with_suffix(".onnx.partial")
    if entry.export_onnx is not None:
        entry.export_onnx(partial)
    else:
        module = entry.build_module()
        torch_export.export_module(module, entry.inputs, entry.output_names, partial, dims=entry.default_dims)
    if entry.metadata:
        _write_metadata(partial, entry.metadata)
    partial.replace(path)
    return path


def _metadata_tag(metadata: dict[str, str]) -> str:
    """A short digest of ``metadata`` for the cache name ("" when empty), so a change re-exports."""
    if not metadata:
        return ""
    return "-m" + hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()[:8]


def _write_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Set ``metadata`` entries in the metadata_props of the ONNX file at ``path`` (in place)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    existing = {entry.key: entry for entry in proto.metadata_props}
    for key, value in metadata.items():
        if key in existing:
            existing[key].value = value
        else:
            proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


__all__ = ["cached_onnx", "load", "load_factory", "load_zoo", "split_factory_ref"]
