"""Image preprocessing shared by the zoo and ``--data <folder of images>``: one photo -> one input sample.

An ``ImagePreprocess`` says how a model wants its pictures: resize the shorter side, centre crop,
subtract ``mean`` and divide by ``std`` (both in 0..255 pixel units, per channel, in the order of
``channels``), and lay the result out as CHW or HWC. It serializes to JSON so that an ONNX model can
carry it in its ``metadata_props`` under ``METADATA_KEY``; hone's zoo exports write it there.

    image (PIL or uint8 array, HW / HWC gray, RGB or RGBA)
      -> RGB (gray expanded to 3 channels, alpha dropped)
      -> resize so the shorter side is ``resize_shorter`` (bilinear; aspect kept)
      -> centre crop ``size`` = (height, width)
      -> (pixels - mean) / std  as float32, channels reordered to ``channels``
      -> CHW when ``layout`` is "NCHW" (the batch axis is not added here)

Imports only numpy and PIL (and hone's errors), so it is cheap for any consumer.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import numpy as np
from PIL import Image

from hone.errors import OptionError, ShapeError

__all__ = ["IMAGENET_MEAN_PIXELS", "IMAGENET_STD_PIXELS", "METADATA_KEY", "ImagePreprocess"]

# The key under which an ONNX model's metadata_props holds ``ImagePreprocess.to_json()``.
METADATA_KEY = "hone.preprocess"

# torchvision's ImageNet mean and std (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225), times 255.
IMAGENET_MEAN_PIXELS = (123.675, 116.28, 103.53)
IMAGENET_STD_PIXELS = (58.395, 57.12, 57.375)

Layout = Literal["NCHW", "NHWC"]  # channels first or last (the batch axis is added by the caller)
ChannelOrder = Literal["RGB", "BGR"]
LAYOUTS: tuple[Layout, ...] = get_args(Layout)
CHANNEL_ORDERS: tuple[ChannelOrder, ...] = get_args(ChannelOrder)


@dataclass(frozen=True)
class ImagePreprocess:
    """How one image becomes one model input sample; mean and std are in 0..255 pixel units.

    ``size`` is the (height, width) of the centre crop. ``resize_shorter`` is the length the
    shorter side is resized to before cropping, or None to resize the whole image to ``size``
    (aspect not kept, no crop). ``mean`` and ``std`` are per channel, in the order of ``channels``.
    """

    layout: Layout = "NCHW"
    size: tuple[int, int] = (224, 224)
    resize_shorter: int | None = 256
    mean: tuple[float, float, float] = (127.0, 127.0, 127.0)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)
    channels: ChannelOrder = "RGB"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise OptionError(f"image layout {self.layout!r} is unknown; choose one of: {', '.join(LAYOUTS)}")
        if self.channels not in CHANNEL_ORDERS:
            raise OptionError(
                f"image channels {self.channels!r} are unknown; choose one of: {', '.join(CHANNEL_ORDERS)}"
            )
        size = tuple(self.size)
        if len(size) != 2 or not all(_is_positive_int(side) for side in size):
            raise OptionError(f"image size must be (height, width) in positive pixels, got {self.size!r}")
        if self.resize_shorter is not None:
            if not _is_positive_int(self.resize_shorter):
                raise OptionError(
                    f"resize_shorter must be a positive number of pixels or None, got {self.resize_shorter!r}"
                )
            if self.resize_shorter < max(size):
                raise OptionError(
                    f"resize_shorter {self.resize_shorter} is smaller than the crop {size[0]}x{size[1]}; "
                    f"resize to at least {max(size)} pixels"
                )
        for field_name in ("mean", "std"):
            values = tuple(getattr(self, field_name))
            if len(values) != 3 or not all(_is_number(v) and np.isfinite(v) for v in values):
                raise OptionError(
                    f"image {field_name} must be 3 finite numbers (0..255 pixel units), got {values!r}"
                )
            object.__setattr__(self, field_name, tuple(float(v) for v in values))
        if any(v <= 0 for v in self.std):
            raise OptionError(f"image std must be positive, got {self.std!r}")
        object.__setattr__(self, "size", (int(size[0]), int(size[1])))

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """The shape of one preprocessed sample: (3, height, width) for NCHW, (height, width, 3) for NHWC."""
        height, width = self.size
        return (3, height, width) if self.layout == "NCHW" else (height, width, 3)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ImagePreprocess:
        """The inverse of ``to_json``; unknown or malformed fields fail with a message naming them."""
        try:
            fields: Any = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise OptionError(f"image preprocessing {text!r:.80} is not JSON: {exc}") from exc
        if not isinstance(fields, dict):
            raise OptionError(f"image preprocessing must be a JSON object, got {text!r:.80}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(fields) - known)
        if unknown:
            raise OptionError(
                f"image preprocessing has unknown fields {', '.join(unknown)}; known:"
                f" {', '.join(sorted(known))}"
            )
        for name in ("size", "mean", "std"):
            if name in fields:
                if not isinstance(fields[name], list):
                    raise OptionError(
                        f"image preprocessing field {name!r} must be a list, got {fields[name]!r}"
                    )
                fields[name] = tuple(fields[name])
        return cls(**fields)

    def preprocess(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """One image -> one float32 sample of ``sample_shape`` (no batch axis)."""
        picture = _to_rgb_image(image)
        height, width = self.size
        if self.resize_shorter is None:
            picture = picture.resize((width, height), Image.Resampling.BILINEAR)
        else:
            picture = _resize_shorter(picture, self.resize_shorter)
            picture = _centre_crop(picture, height, width)
        pixels = np.asarray(picture, dtype=np.float32)  # (height, width, 3), RGB
        if self.channels == "BGR":
            pixels = pixels[:, :, ::-1]
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        sample = (pixels - mean) / std
        if self.layout == "NCHW":
            sample = sample.transpose(2, 0, 1)
        return np.ascontiguousarray(sample, dtype=np.float32)


def _is_positive_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and bool(value > 0)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _to_rgb_image(image: Image.Image | np.ndarray) -> Image.Image:
    """A PIL RGB image from PIL (any mode) or an array: HW or HWx1 gray, HWx3 RGB, HWx4 RGBA (0..255)."""
    if isinstance(image, Image.Image):
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
        return image.convert("RGB")
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)) or 0 in array.shape:
        raise ShapeError(
            "an image array must be (height, width) gray or (height, width, 3|4) RGB(A), got shape"
            f" {array.shape}"
        )
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
            raise ShapeError(f"an image array must hold 0..255 pixel numbers, got dtype {array.dtype}")
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    picture = Image.fromarray(np.ascontiguousarray(array))
    return picture.convert("RGB")


def _resize_shorter(picture: Image.Image, shorter: int) -> Image.Image:
    width, height = picture.size
    if min(width, height) == shorter:
        return picture
    if width <= height:
        new_width, new_height = shorter, max(1, round(height * shorter / width))
    else:
        new_width, new_height = max(1, round(width * shorter / height)), shorter
    return picture.resize((new_width, new_height), Image.Resampling.BILINEAR)


def _centre_crop(picture: Image.Image, height: int, width: int) -> Image.Image:
    full_width, full_height = picture.size
    top = int(round((full_height - height) / 2.0))
    left = int(round((full_width - width) / 2.0))
    return picture.crop((left, top, left + width, top + height))
