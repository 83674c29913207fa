"""Real colour photos as sample data for the image zoo: crops of the photos bundled with scikit-image
and scikit-learn (installed with them; nothing is downloaded).

Each photo gives ``len(WINDOWS) * 2`` samples: ``WINDOWS`` are square crops (side a fraction of the
photo's shorter side, at fixed relative positions), each also mirrored left-right, and each crop is
preprocessed with an ``ImagePreprocess`` (resize shorter side, centre crop, normalize). The split is
by source photo, so that calibration never sees a photo that evaluation judges on:

- evaluation (``EVALUATION_PHOTOS``, 6 photos, 96 samples): photos of ImageNet classes: chelsea (a
  cat), coffee (an espresso), rocket, the left and right views of scikit-image's stereo motorcycle
  (one scene, so both on this side), camera (grey: a tripod);
- calibration (``CALIBRATION_PHOTOS``, 6 photos, 96 samples, of which quantize uses 64): astronaut,
  immunohistochemistry (a microscope slide), hubble_deep_field, retina, and scikit-learn's china (a
  temple) and flower: photos outside ImageNet's label space, whose top-1 answers are near-ties.

``showcase_photos`` gives whole photos (no crop window, no flip) for a report's top-5 table.
The lists are deterministic: same photos, same windows, same order on every call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from hone.imaging import ImagePreprocess


@dataclass(frozen=True)
class Window:
    """A square crop: side ``scale`` x the shorter side, top-left at (``top``, ``left``) x the free room."""

    scale: float
    top: float
    left: float

    @property
    def label(self) -> str:
        return f"s{self.scale:g}@{self.top:g},{self.left:g}"


WINDOWS = (
    Window(1.0, 0.5, 0.5),  # the centred square of the whole shorter side
    Window(0.8, 0.0, 0.0),
    Window(0.8, 0.0, 1.0),
    Window(0.8, 1.0, 0.0),
    Window(0.8, 1.0, 1.0),
    Window(0.6, 0.5, 0.5),
    Window(0.6, 0.5, 0.0),
    Window(0.6, 0.5, 1.0),
)
SAMPLES_PER_PHOTO = 2 * len(WINDOWS)


@dataclass(frozen=True)
class PhotoSamples:
    """Preprocessed samples, stacked: ``images`` is float32 ``(n, *preprocess.sample_shape)``;
    ``names[i]`` says which photo, window and flip sample i is; ``photos`` are the source photos."""

    images: np.ndarray
    names: tuple[str, ...]
    photos: tuple[str, ...]
    description: str

    def __len__(self) -> int:
        return len(self.names)


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        return getattr(data, name)()

    return load


def _motorcycle(view: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        return data.stereo_motorcycle()[view]

    return load


def _sklearn(file_name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(file_name)

    return load


def _grey_skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        grey = np.asarray(getattr(skimage.data, name)())
        return np.repeat(grey[..., None], 3, axis=2)

    return load


# photo name -> (where it comes from, loader returning uint8 RGB (height, width, 3))
PHOTOS: dict[str, tuple[str, Callable[[], np.ndarray]]] = {
    "astronaut": ("skimage.data.astronaut()", _skimage("astronaut")),
    "chelsea": ("skimage.data.chelsea()", _skimage("chelsea")),
    "coffee": ("skimage.data.coffee()", _skimage("coffee")),
    "rocket": ("skimage.data.rocket()", _skimage("rocket")),
    "motorcycle_left": ("skimage.data.stereo_motorcycle()[0]", _motorcycle(0)),
    "motorcycle_right": ("skimage.data.stereo_motorcycle()[1]", _motorcycle(1)),
    "immunohistochemistry": ("skimage.data.immunohistochemistry()", _skimage("immunohistochemistry")),
    "hubble_deep_field": ("skimage.data.hubble_deep_field()", _skimage("hubble_deep_field")),
    "retina": ("skimage.data.retina()", _skimage("retina")),
    "camera": ("skimage.data.camera() (grey, as RGB)", _grey_skimage("camera")),
    "china": ("sklearn.datasets.load_sample_image('china.jpg')", _sklearn("china.jpg")),
    "flower": ("sklearn.datasets.load_sample_image('flower.jpg')", _sklearn("flower.jpg")),
}
# Evaluation: photos of things ImageNet has a class for, so that the float model's top-1 answer means
# something (a cat, an espresso, a missile, a moped, a tripod). Calibration: everything else (an
# astronaut portrait, a micrograph, a galaxy field, a retina scan, a temple, a flower): calibration
# needs the range of pixel statistics, not labels, and judging top-1 on a photo outside the label
# space (astronaut: "bobsled" at 0.13) measures near-ties, not kept answers.
EVALUATION_PHOTOS = ("chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right", "camera")
CALIBRATION_PHOTOS = ("astronaut", "immunohistochemistry", "china", "flower", "hubble_deep_field", "retina")
SHOWCASE_PHOTOS = ("chelsea", "coffee", "rocket", "motorcycle_left", "camera")


def load_photo(name: str) -> np.ndarray:
    """Photo ``name`` of ``PHOTOS`` as uint8 RGB ``(height, width, 3)``."""
    _, load = PHOTOS[name]
    pixels = np.asarray(load())
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3, (name, pixels.shape)
    return pixels


def crop(pixels: np.ndarray, window: Window) -> np.ndarray:
    """The square ``window`` of a ``(height, width, channels)`` photo."""
    height, width = pixels.shape[:2]
    side = max(1, int(round(window.scale * min(height, width))))
    top = int(round(window.top * (height - side)))
    left = int(round(window.left * (width - side)))
    return pixels[top : top + side, left : left + side]


def photo_samples(names: Sequence[str], preprocess: ImagePreprocess | None = None) -> PhotoSamples:
    """Every window of every photo in ``names``, plain and mirrored, preprocessed and stacked."""
    preprocess = preprocess or ImagePreprocess()
    images: list[np.ndarray] = []
    labels: list[str] = []
    for name in names:
        pixels = load_photo(name)
        for window in WINDOWS:
            square = crop(pixels, window)
            for flipped in (False, True):
                view = square[:, ::-1] if flipped else square
                images.append(preprocess.preprocess(view))
                labels.append(f"{name}/{window.label}{'/flip' if flipped else ''}")
    description = (
        f"{len(labels)} crops ({len(WINDOWS)} windows x 2 flips) of {len(names)} real photos: "
        + ", ".join(names)
    )
    return PhotoSamples(
        np.stack(images).astype(np.float32, copy=False), tuple(labels), tuple(names), description
    )


def evaluation_samples(preprocess: ImagePreprocess | None = None) -> PhotoSamples:
    """The held-out crops (photos disjoint from ``calibration_samples``)."""
    samples = photo_samples(EVALUATION_PHOTOS, preprocess)
    return replace(
        samples,
        description=f"{samples.description} (calibration uses other photos: {', '.join(CALIBRATION_PHOTOS)})",
    )


def calibration_samples(preprocess: ImagePreprocess | None = None) -> PhotoSamples:
    """The calibration crops (photos disjoint from ``evaluation_samples``)."""
    samples = photo_samples(CALIBRATION_PHOTOS, preprocess)
    return replace(samples, description=f"{samples.description} (disjoint from the evaluation photos)")


def showcase_photos(preprocess: ImagePreprocess | None = None) -> list[tuple[str, np.ndarray]]:
    """Whole photos for a top-5 table: (name, one preprocessed sample without batch axis)."""
    preprocess = preprocess or ImagePreprocess()
    return [(name, preprocess.preprocess(load_photo(name))) for name in SHOWCASE_PHOTOS]
