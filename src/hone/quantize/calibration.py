"""Calibration data for static INT8: from a folder or file, from the zoo, or synthesized.

Sources, in the order ``calibration_set`` tries them:

- ``PATH`` given by the user: a ``.npz`` (arrays named after the model's inputs, batch first), a
  ``.npy`` (one array, batch first; single-input models), images (``.png``/``.jpg``/``.jpeg``/
  ``.bmp``; single image input ``(N, C, H, W)``: resized to H x W, scaled to [0, 1] and, for 3
  channels, normalized with ImageNet's mean and std), or a folder of any of these.
- the zoo's calibration split where the model has one (digits: training images, never the
  held-out images the gate judges with);
- inputs synthesized from the input specs, with a warning: random inputs exercise ranges a real
  distribution never reaches, so the scales fit real data less well.

Every array is checked against the model's input specs (dtype exactly, static dims exactly) so
that a wrong file fails here with one line, not deep inside the quantizer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from hone.data import synthesize, zoo_calibration_set
from hone.errors import OptionError, ShapeError
from hone.model import Model
from hone.samples import SampleSet
from hone.specs import TensorSpec

if TYPE_CHECKING:  # onnxruntime's quantization tools are imported when calibrating, not with hone
    from onnxruntime.quantization import CalibrationDataReader

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
ARRAY_SUFFIXES = (".npy", ".npz")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_BATCH = 16


# Where calibration inputs came from: the user's file(s), the zoo's calibration split, or invented.
CalibrationSource = Literal["file", "zoo", "synthesized"]


@dataclass
class CalibrationSet:
    """Calibration inputs in batches, and where they came from."""

    feeds: list[dict[str, np.ndarray]]
    source: CalibrationSource
    description: str

    @property
    def samples(self) -> int:
        return sum(len(next(iter(f.values()))) for f in self.feeds)

    def reader(self) -> CalibrationDataReader:
        """An onnxruntime CalibrationDataReader over the batches (a fresh one each call)."""
        from onnxruntime.quantization import CalibrationDataReader

        feeds = self.feeds

        class _Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._batches: Iterator[dict[str, np.ndarray]] = iter(feeds)

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self._batches, None)

            def rewind(self) -> None:
                self._batches = iter(feeds)

        return _Reader()


def calibration_set(
    model: Model, path: str | Path | None = None, *, samples: int = 64, seed: int = 7
) -> CalibrationSet:
    """Calibration inputs for ``model``: from ``path``, else the calibration half of the model's
    attached samples (``hone.data``: ``--data`` or the zoo's), else synthesized (warned)."""
    if path is None and model.samples is not None and model.samples.samples:
        split = model.samples.split()
        calibration = split.calibration
        if len(calibration) > samples:  # evenly spaced, so every source of the split is seen
            keep = np.linspace(0, len(calibration) - 1, samples).round().astype(int)
            calibration = SampleSet(
                [calibration.samples[i] for i in keep],
                calibration.source,
                f"{samples} of the {calibration.description}",
            )
        batches = calibration.batches(model.inputs, _BATCH)
        if len(batches) > 1 and _rows(batches[-1]) != _rows(batches[0]):
            batches = batches[:-1]  # histogram calibrators need batches of one size
        source: CalibrationSource = "zoo" if model.samples.source == "zoo" else "file"
        return CalibrationSet(batches, source, f"{calibration.description} ({split.description})")
    if path is not None:
        arrays = load_arrays(Path(path), model.inputs)
        check_arrays(arrays, model.inputs)
        return CalibrationSet(_batches(arrays), "file", f"{_count(arrays)} samples from {path}")
    zoo_arrays = zoo_calibration_set(model)
    if zoo_arrays is not None:
        arrays, description = zoo_arrays
        arrays = {k: v[:samples] for k, v in arrays.items()}
        check_arrays(arrays, model.inputs)
        return CalibrationSet(_batches(arrays), "zoo", f"{_count(arrays)} samples: {description}")
    logger.warning(
        "calibrating %s on %d synthesized inputs: give real samples with --calib PATH for better scales",
        model.name,
        samples,
    )
    feeds = [
        synthesize(model.inputs, batch=min(_BATCH, samples - i), dims=model.default_dims, seed=seed + i)
        for i in range(0, samples, _BATCH)
    ]
    return CalibrationSet(
        feeds, "synthesized", f"{samples} inputs synthesized from the input specs (weaker than real data)"
    )


def load_arrays(path: Path, specs: tuple[TensorSpec, ...] | list[TensorSpec]) -> dict[str, np.ndarray]:
    """Read calibration arrays (by input name, batch first) from a file or a folder of files."""
    if not path.exists():
        raise OptionError(
            f"calibration data {path} does not exist; give a .npz/.npy/image file or a folder of them"
        )
    files = (
        sorted(p for p in path.iterdir() if p.suffix.lower() in ARRAY_SUFFIXES + IMAGE_SUFFIXES)
        if path.is_dir()
        else [path]
    )
    if not files:
        raise OptionError(
            f"calibration folder {path} holds no .npz, .npy or image files; put samples there or drop --calib"
        )
    parts: dict[str, list[np.ndarray]] = {}
    for file in files:
        for name, array in _read(file, specs).items():
            if array.ndim == 0:  # np.concatenate would call it a shape mismatch
                raise ShapeError(
                    f"calibration array {name!r} in {file} is a scalar; give samples batch first, "
                    "shaped (N, ...) like the model's input",
                    input=name,
                )
            parts.setdefault(name, []).append(array)
    arrays = {}
    for name, chunks in parts.items():
        try:
            arrays[name] = np.concatenate(chunks)
        except ValueError as exc:
            raise ShapeError(
                f"calibration arrays for input {name!r} in {path} have different shapes: {exc}"
            ) from exc
    return arrays


def check_arrays(arrays: dict[str, np.ndarray], specs: tuple[TensorSpec, ...] | list[TensorSpec]) -> None:
    """Every input present, with the spec's dtype and rank and its static dims (batch excepted)."""
    names = [s.name for s in specs]
    missing = [n for n in names if n not in arrays]
    unknown = [n for n in arrays if n not in names]
    if missing or unknown:
        raise ShapeError(
            f"calibration data has inputs {sorted(arrays)} but the model takes {names}"
            + (f" (missing {missing})" if missing else "")
            + (f" (unknown {unknown})" if unknown else "")
        )
    counts = {len(a) for a in arrays.values()}
    if len(counts) != 1 or 0 in counts:
        raise ShapeError(
            f"calibration inputs must hold the same number of samples (at least one), got {sorted(counts)}"
        )
    for spec in specs:
        array = arrays[spec.name]
        if str(array.dtype) != spec.dtype:
            raise ShapeError(
                f"calibration input {spec.name!r} has dtype {array.dtype}, the model wants {spec.dtype}; "
                f"convert it (e.g. array.astype('{spec.dtype}'))",
                input=spec.name,
            )
        if array.ndim != len(spec.shape):
            raise ShapeError(
                f"calibration input {spec.name!r} has shape {list(array.shape)}, the model wants "
                f"{list(spec.shape)} (batch first)",
                input=spec.name,
            )
        for axis, (want, got) in enumerate(zip(spec.shape, array.shape, strict=False)):
            if axis > 0 and isinstance(want, int) and want > 0 and want != got:
                raise ShapeError(
                    f"calibration input {spec.name!r} has shape {list(array.shape)}, the model wants "
                    f"{list(spec.shape)} (dim {axis} must be {want})",
                    input=spec.name,
                )


def _read(file: Path, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    suffix = file.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(file, allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        if suffix == ".npy":
            return {_single_input(specs, file).name: np.load(file, allow_pickle=False)}
    except (OSError, ValueError) as exc:
        raise OptionError(f"calibration file {file} cannot be read as {suffix}: {exc}") from exc
    return {_single_input(specs, file).name: _image(file, _single_input(specs, file))}


def _single_input(specs: Sequence[TensorSpec], file: Path) -> TensorSpec:
    if len(specs) != 1:
        raise OptionError(
            f"{file.name}: .npy and image files calibrate single-input models only; this one takes "
            f"{[s.name for s in specs]}, so use a .npz with one array per input"
        )
    return specs[0]


def _image(file: Path, spec: TensorSpec) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    dims = [d for d in spec.shape[1:] if isinstance(d, int) and d > 0]
    if len(spec.shape) != 4 or len(dims) != 3:
        raise OptionError(
            f"{file.name}: images need an input of static shape (N, C, H, W); {spec.name!r} is"
            f" {list(spec.shape)}"
        )
    channels, height, width = dims
    try:
        with Image.open(file) as image:
            converted = image.convert("RGB" if channels == 3 else "L").resize((width, height))
    except (OSError, UnidentifiedImageError) as exc:
        raise OptionError(f"calibration image {file} cannot be read: {exc}") from exc
    pixels = np.asarray(converted, dtype=np.float32) / 255.0
    pixels = pixels.reshape(height, width, -1).transpose(2, 0, 1)
    if channels == 3:
        pixels = (pixels - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]
    return pixels[None].astype(spec.dtype)


def _batches(arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    count = _count(arrays)
    return [{k: v[i : i + _BATCH] for k, v in arrays.items()} for i in range(0, count, _BATCH)]


def _rows(feeds: dict[str, np.ndarray]) -> tuple[tuple[int, ...], ...]:
    return tuple(array.shape for array in feeds.values())


def _count(arrays: dict[str, np.ndarray]) -> int:
    return len(next(iter(arrays.values())))
