"""digits_cnn for the zoo: a small conv-bn-relu CNN trained on scikit-learn's digits, with real accuracy.

The data is scikit-learn's bundled 8x8 handwritten digits (1,797 gray images, 10 classes; shipped
with scikit-learn, no download). Pixels are integers 0..16 and the model takes them scaled to
``[0, 1]`` (``pixels / 16``) as float32 of shape ``(batch, 1, 8, 8)``; ``prepare_images`` does that
for raw ``load_digits().images``. The held-out split is fixed: ``train_test_split(test_size=0.25,
random_state=0, stratify=labels)``.

The model is trained on first use, deterministically (seed 0, one thread, a local generator for the
shuffling), in a few seconds; its ``state_dict`` and measured held-out accuracy are cached under
``cache_dir() / "zoo"`` and reused. The conv-bn-relu blocks give later passes BatchNorm to fold.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hone.paths import cache_dir
from hone.specs import TensorSpec
from hone.zoo.types import EvalSet, TrainSet, ZooModel

logger = logging.getLogger(__name__)

NAME = "digits_cnn"
VERSION = "1"
SEED = 0
TEST_FRACTION = 0.25
PIXEL_MAX = 16.0
NUM_CLASSES = 10
EPOCHS = 20
BATCH_SIZE = 64
LEARNING_RATE = 3e-3
MIN_HELDOUT_TOP1 = 0.95


@dataclass(frozen=True)
class DigitsSplit:
    """The fixed split: images as float32 ``(n, 1, 8, 8)`` in [0, 1], labels as int64 ``(n,)``."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


@dataclass(frozen=True)
class TrainingRecord:
    """What training measured, cached as JSON next to the weights."""

    heldout_top1: float
    train_samples: int
    test_samples: int
    epochs: int
    seed: int
    version: str


class DigitsCNN(nn.Module):
    """Three conv-bn-relu blocks (16, 32, 64 channels) with two 2x2 max pools, then a linear layer."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(1, 16),
            _conv_bn_relu(16, 32),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            _conv_bn_relu(32, 64),
            nn.MaxPool2d(2),  # 4x4 -> 2x2
        )
        self.classifier = nn.Linear(64 * 2 * 2, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(images), 1))


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def prepare_images(pixels: np.ndarray) -> np.ndarray:
    """Raw digits pixels, ``(n, 8, 8)`` or ``(n, 64)`` in 0..16 -> model input ``(n, 1, 8, 8)`` float32 in
    [0, 1]."""
    return (np.asarray(pixels, dtype=np.float32).reshape(-1, 1, 8, 8) / PIXEL_MAX).astype(np.float32)


def load_split() -> DigitsSplit:
    """scikit-learn's digits, scaled to [0, 1], split 75/25 with a fixed seed and stratified labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = prepare_images(digits.images)
    labels = digits.target.astype(np.int64)
    train_images, test_images, train_labels, test_labels = train_test_split(
        images, labels, test_size=TEST_FRACTION, random_state=SEED, stratify=labels
    )
    return DigitsSplit(train_images, train_labels, test_images, test_labels)


def weights_path() -> Path:
    return cache_dir() / "zoo" / f"{NAME}-v{VERSION}-seed{SEED}.pt"


def record_path() -> Path:
    return cache_dir() / "zoo" / f"{NAME}-v{VERSION}-seed{SEED}.json"


@torch.no_grad()
def _top1(module: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    predictions = module(torch.from_numpy(images)).argmax(dim=1).numpy()
    return float((predictions == labels).mean())


def _train(split: DigitsSplit) -> tuple[DigitsCNN, TrainingRecord]:
    """Adam on cross-entropy, fixed epochs; seeded init and shuffling, one thread for bitwise
    repeatability."""
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            module = DigitsCNN()
        generator = torch.Generator().manual_seed(SEED)
        images = torch.from_numpy(split.train_images)
        labels = torch.from_numpy(split.train_labels)
        optimizer = torch.optim.Adam(module.parameters(), lr=LEARNING_RATE)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)
        loss_fn = nn.CrossEntropyLoss()
        module.train()
        for _ in range(EPOCHS):
            order = torch.randperm(len(images), generator=generator)
            for start in range(0, len(order), BATCH_SIZE):
                batch = order[start : start + BATCH_SIZE]
                optimizer.zero_grad()
                loss_fn(module(images[batch]), labels[batch]).backward()
                optimizer.step()
            scheduler.step()
        module.eval()
        accuracy = _top1(module, split.test_images, split.test_labels)
    finally:
        torch.set_num_threads(threads_before)
    record = TrainingRecord(
        heldout_top1=accuracy,
        train_samples=len(split.train_labels),
        test_samples=len(split.test_labels),
        epochs=EPOCHS,
        seed=SEED,
        version=VERSION,
    )
    if accuracy < MIN_HELDOUT_TOP1:
        raise RuntimeError(
            f"{NAME} reached only {accuracy:.3f} held-out top-1 (expected >= {MIN_HELDOUT_TOP1})"
        )
    return module, record


def _replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Write next to ``path`` then rename, so an interrupted build never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp_path = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temp_path)
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


def _ensure_trained() -> None:
    if weights_path().exists() and record_path().exists():
        return
    logger.info("training %s on scikit-learn digits (cached at %s)", NAME, weights_path())
    module, record = _train(load_split())
    logger.info("%s held-out top-1: %.4f", NAME, record.heldout_top1)
    state_dict = module.state_dict()
    _replace_atomically(weights_path(), lambda temp: torch.save(state_dict, temp))
    _replace_atomically(record_path(), lambda temp: temp.write_text(json.dumps(asdict(record), indent=2)))


def build_digits_cnn() -> DigitsCNN:
    """The trained digits CNN in eval mode (trains and caches it on first use)."""
    _ensure_trained()
    with torch.device("meta"):
        module = DigitsCNN()
    module.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True), assign=True)
    return module.eval()


def training_record() -> TrainingRecord:
    """What training measured (trains and caches the model on first use)."""
    _ensure_trained()
    return TrainingRecord(**json.loads(record_path().read_text()))


def heldout_accuracy() -> float:
    """Top-1 accuracy of the cached model on the fixed held-out split, as measured after training."""
    return training_record().heldout_top1


def eval_data() -> EvalSet:
    """The held-out 25% (450 images) with their labels, judged by top-1."""
    split = load_split()
    return EvalSet(
        inputs={"input": split.test_images},
        labels=split.test_labels,
        metric="top1",
        description=(
            f"scikit-learn digits held-out split ({len(split.test_labels)} images; "
            f"test_size={TEST_FRACTION}, random_state={SEED}, stratified), pixels / 16 in [0, 1]"
        ),
    )


def calibration_data() -> tuple[dict[str, np.ndarray], str]:
    """Training images (never the held-out ones the accuracy gate judges with)."""
    split = load_split()
    return {
        "input": split.train_images
    }, "scikit-learn digits training split (disjoint from the held-out split)"


def train_data() -> TrainSet:
    """The training 75% with their labels (disjoint from the held-out split the gate judges with)."""
    split = load_split()
    return TrainSet({"input": split.train_images}, split.train_labels, "the digits train split")


DIGITS_CNN = ZooModel(
    name=NAME,
    description=(
        "Small CNN (3 conv-bn-relu blocks) trained on scikit-learn's 8x8 digits; "
        "input: gray 8x8 pixels scaled to [0, 1] (raw 0..16 divided by 16), output: 10 logits"
    ),
    inputs=(TensorSpec("input", "float32", ("batch", 1, 8, 8)),),
    output_names=("logits",),
    build_module=build_digits_cnn,
    provenance={
        "seed": str(SEED),
        "dataset": "sklearn.datasets.load_digits (1797 images, 10 classes)",
        "input_scaling": "pixels / 16, float32 in [0, 1], shape (batch, 1, 8, 8)",
        "split": f"train_test_split(test_size={TEST_FRACTION}, random_state={SEED}, stratify=labels)",
        "training": (
            f"Adam lr={LEARNING_RATE}, cosine schedule, {EPOCHS} epochs, batch {BATCH_SIZE}, 1 thread"
        ),
        "accuracy": "held-out top-1 measured after training: hone.zoo.digits.heldout_accuracy()",
    },
    eval_data=eval_data,
    calibration_data=calibration_data,
    train_data=train_data,
    version=VERSION,
)
