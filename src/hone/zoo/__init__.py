"""The built-in models: efficientnet_lite0 (real ImageNet weights, real photos as data; the default),
resnet18/50 (seeded weights, not trained), digits_cnn (trained on sklearn's digits), minilm (real
weights), transformer_stack (seeded; the pipeline workload). Each is exported to ONNX once and
cached, with the entry's ``metadata`` (e.g. its image preprocessing) in the file's metadata_props;
the modules load lazily so that importing hone does not import torch.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from pathlib import Path

from hone.errors import UnknownModelError
from hone.paths import cache_dir
from hone.zoo.base import EvalSet, ZooModel

__all__ = ["EvalSet", "ZooModel", "cached_onnx", "get", "names"]

logger = logging.getLogger(__name__)

# zoo name -> (module under hone.zoo, attribute holding its ZooModel)
_REGISTRY: dict[str, tuple[str, str]] = {
    "efficientnet_lite0": ("efficientnet", "EFFICIENTNET_LITE0"),
    "resnet18": ("resnet", "RESNET18"),
    "resnet50": ("resnet", "RESNET50"),
    "digits_cnn": ("digits", "DIGITS_CNN"),
    "minilm": ("minilm", "MINILM"),
    "minilm-eager": ("minilm", "MINILM_EAGER"),
    "transformer_stack": ("transformer", "TRANSFORMER_STACK"),
}

DEFAULT_MODEL = "efficientnet_lite0"


def names() -> list[str]:
    return list(_REGISTRY)


def get(name: str) -> ZooModel:
    if name not in _REGISTRY:
        raise UnknownModelError(
            f"{name!r} is not a zoo model; choose one of: {', '.join(_REGISTRY)}", name=name
        )
    module_name, attribute = _REGISTRY[name]
    module = importlib.import_module(f"hone.zoo.{module_name}")
    return getattr(module, attribute)


def cached_onnx(entry: ZooModel) -> Path:
    """The ONNX export of ``entry``, made on first use and kept in the user cache."""
    import torch

    from hone import torch_export

    folder = cache_dir() / "zoo"
    folder.mkdir(parents=True, exist_ok=True)
    torch_version = torch.__version__.split("+")[0]
    path = folder / f"{entry.name}-v{entry.version}{_metadata_tag(entry.metadata)}-torch{torch_version}.onnx"
    if path.exists():
        return path
    logger.info("exporting zoo model %s to %s (first use)", entry.name, path)
    module = entry.build_module()
    partial = path.with_suffix(".onnx.partial")
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
