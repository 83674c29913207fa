"""The built-in models: efficientnet_lite0 (real ImageNet weights, real photos as data; the default),
resnet18/50 (seeded weights, not trained), digits_cnn (trained on sklearn's digits), minilm (real
weights), transformer_stack (seeded; the pipeline workload), tiny_gpt (a
GPT-2 trained on first use on Python's own docs; generative). An entry hands out a factory of its
eager module and its data sets; ``hone.sources`` exports it to ONNX once and caches the file, with the
entry's ``metadata`` (e.g. its image preprocessing) in its metadata_props. The modules load lazily so
that importing hone does not import torch.
"""

from __future__ import annotations

import importlib

from hone.errors import UnknownModelError
from hone.zoo.types import EvalSet, TrainSet, ZooModel

__all__ = ["DEFAULT_MODEL", "EvalSet", "TrainSet", "ZooModel", "get", "module_of", "names"]

# zoo name -> (module under hone.zoo, or a full module path; the attribute holding its ZooModel)
_REGISTRY: dict[str, tuple[str, str]] = {
    "efficientnet_lite0": ("efficientnet", "EFFICIENTNET_LITE0"),
    "resnet18": ("resnet", "RESNET18"),
    "resnet50": ("resnet", "RESNET50"),
    "digits_cnn": ("digits", "DIGITS_CNN"),
    "minilm": ("minilm", "MINILM"),
    "minilm-eager": ("minilm", "MINILM_EAGER"),
    "transformer_stack": ("transformer", "TRANSFORMER_STACK"),
    # built by the generative exporter, so it lives in hone.generate (a module path, imported on use)
    "tiny_gpt": ("hone.generate.tiny_gpt", "TINY_GPT"),
}

DEFAULT_MODEL = "efficientnet_lite0"


def names() -> list[str]:
    return list(_REGISTRY)


def module_of(name: str) -> str:
    """The module that holds ``name``'s entry (e.g. ``hone.zoo.digits``)."""
    module_name = _REGISTRY[name][0]
    return module_name if "." in module_name else f"hone.zoo.{module_name}"


def get(name: str) -> ZooModel:
    if name not in _REGISTRY:
        raise UnknownModelError(
            f"{name!r} is not a zoo model; choose one of: {', '.join(_REGISTRY)}", name=name
        )
    module = importlib.import_module(module_of(name))
    return getattr(module, _REGISTRY[name][1])
