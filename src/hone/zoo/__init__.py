"""The built-in models: resnet18/50 (seeded), digits_cnn (trained on sklearn's digits), minilm (real
weights), transformer_stack (seeded; the pipeline workload). Each is exported to ONNX once and
cached; the modules load lazily so that importing hone does not import torch.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from hone.errors import UnknownModelError
from hone.paths import cache_dir
from hone.zoo.base import EvalSet, ZooModel

__all__ = ["EvalSet", "ZooModel", "cached_onnx", "get", "names"]

logger = logging.getLogger(__name__)

# zoo name -> (module under hone.zoo, attribute holding its ZooModel)
_REGISTRY: dict[str, tuple[str, str]] = {
    "resnet18": ("resnet", "RESNET18"),
    "resnet50": ("resnet", "RESNET50"),
    "digits_cnn": ("digits", "DIGITS_CNN"),
    "minilm": ("minilm", "MINILM"),
    "minilm-eager": ("minilm", "MINILM_EAGER"),
    "transformer_stack": ("transformer", "TRANSFORMER_STACK"),
}

DEFAULT_MODEL = "resnet18"


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
    path = folder / f"{entry.name}-v{entry.version}-torch{torch.__version__.split('+')[0]}.onnx"
    if path.exists():
        return path
    logger.info("exporting zoo model %s to %s (first use)", entry.name, path)
    module = entry.build_module()
    partial = path.with_suffix(".onnx.partial")
    torch_export.export_module(
        module, entry.inputs, entry.output_names, partial, dims=entry.default_dims
    )
    partial.replace(path)
    return path
