"""How raw data becomes a model's input tensors, as far as hone knows it: written into the edge and
web bundles' manifests, so that an app feeding the model does what the zoo's data did."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hone.model import Model
from hone.specs import TensorSpec

PreprocessingKind = Literal["image", "text", "none"]


@dataclass
class Preprocessing:
    """How raw data becomes the model's input tensors, as far as hone knows it."""

    kind: PreprocessingKind
    description: str
    layout: str | None = None  # "NCHW"
    size: list[int] | None = None  # image [height, width]
    channels: str | None = None  # "RGB" | "gray"
    scale: str | None = None  # e.g. "pixels / 255"
    mean: list[float] | None = None  # per channel, applied after scaling: (x - mean) / std
    std: list[float] | None = None
    tokenizer: str | None = None  # path of the tokenizer file
    max_length: int | None = None
    padding: str | None = None


def preprocessing_for(model: Model) -> Preprocessing:
    """The zoo's preprocessing for its models; for anything else hone knows none."""
    zoo_name = model.provenance.get("zoo")
    if zoo_name in ("minilm", "minilm-eager"):
        return _text_preprocessing()
    image = _image_input(model)
    if zoo_name and image is not None:
        return _image_preprocessing(model, image)
    return Preprocessing("none", "none known, feed tensors as the input specs say")


def _image_input(model: Model) -> TensorSpec | None:
    """The single float input shaped (batch, 1 or 3, H, W) with static H and W, if that is what it takes."""
    if len(model.inputs) != 1:
        return None
    spec = model.inputs[0]
    if spec.dtype != "float32" or len(spec.shape) != 4 or spec.shape[1] not in (1, 3):
        return None
    return spec if all(isinstance(d, int) and d > 0 for d in spec.shape[2:]) else None


def _image_preprocessing(model: Model, spec: TensorSpec) -> Preprocessing:
    from hone.quantize.calibration import IMAGENET_MEAN, IMAGENET_STD

    height, width = int(spec.shape[2]), int(spec.shape[3])  # type: ignore[arg-type]
    if spec.shape[1] == 3:
        return Preprocessing(
            "image",
            f"RGB resized to {height}x{width}, pixels / 255, then (x - mean) / std per channel (ImageNet)",
            layout="NCHW",
            size=[height, width],
            channels="RGB",
            scale="pixels / 255",
            mean=[round(float(v), 6) for v in IMAGENET_MEAN],
            std=[round(float(v), 6) for v in IMAGENET_STD],
        )
    scale = model.provenance.get("input_scaling", "pixels / 255")
    return Preprocessing(
        "image",
        f"gray {height}x{width}, {scale}",
        layout="NCHW",
        size=[height, width],
        channels="gray",
        scale=scale,
    )


def _text_preprocessing() -> Preprocessing:
    from hone.zoo import minilm

    return Preprocessing(
        "text",
        f"WordPiece tokens of the model's tokenizer.json, truncated to {minilm.DEFAULT_SEQUENCE_LENGTH},"
        f" padded with {minilm.PAD_TOKEN} (id {minilm.PAD_ID}) to the longest; input_ids, attention_mask (1"
        " for tokens), token_type_ids (zeros), int64 (batch, sequence)",
        tokenizer=str(minilm.model_path() / "tokenizer.json"),
        max_length=minilm.DEFAULT_SEQUENCE_LENGTH,
        padding=f"{minilm.PAD_TOKEN} (id {minilm.PAD_ID}) to the longest in the batch",
    )
