"""ResNet-18 and ResNet-50 for the zoo: torchvision's architectures with seeded, calibrated weights.

The modules mirror torchvision's ``resnet18`` / ``resnet50`` (BasicBlock / Bottleneck, the same
module names and layer layout), so their ``state_dict`` keys match torchvision's and real
torchvision weights would load unchanged. torchvision itself is not needed.

Weights are deterministic (seed 0) and drawn from a local ``torch.Generator``, so building a model
never touches torch's global random state:

- convolutions: kaiming-normal, ``mode="fan_out"``, ReLU gain (torchvision's init);
- the final linear layer: uniform in ``±1/sqrt(fan_in)`` (PyTorch's default ``Linear`` bounds);
- BatchNorm affine parameters: ``gamma ~ U(0.5, 1.5)``, ``beta ~ N(0, 0.1²)``, so they are not the
  identity;
- BatchNorm running statistics: calibrated by running a few seeded noise batches through the
  network in train mode with ``momentum=None`` (a cumulative average), so every BN holds the real
  mean and variance of its input for image-like noise. Folding BN into the preceding Conv is then a
  real numerical change, and eval-mode activations stay normalized (finite, sane logits).

The calibration noise is uniform pixels in ``[0, 1)`` normalized with the ImageNet mean and std,
at 112x112 to keep the build to a few seconds; the resulting ``state_dict`` is cached under
``cache_dir() / "zoo"`` and later builds only load it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from hone.imaging import IMAGENET_MEAN_PIXELS, IMAGENET_STD_PIXELS, METADATA_KEY, ImagePreprocess
from hone.paths import cache_dir
from hone.specs import TensorSpec
from hone.zoo.types import ZooModel

logger = logging.getLogger(__name__)

SEED = 0
VERSION = "1"
NUM_CLASSES = 1000
CALIBRATION_BATCHES = 2
CALIBRATION_BATCH_SIZE = 4
CALIBRATION_RESOLUTION_PX = 112
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# What a real torchvision ResNet expects (these weights are seeded, but the input contract is the same).
PREPROCESS = ImagePreprocess(mean=IMAGENET_MEAN_PIXELS, std=IMAGENET_STD_PIXELS)
# A sanity bound on logits of the calibrated models for image-like inputs; real values are ~1-5.
MAX_SANE_ABS_LOGIT = 100.0


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv-bn layers with an identity (or 1x1 downsample) shortcut, as in torchvision."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here, ResNet v1.5), 1x1 expand, as in torchvision."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


BlockType = type[BasicBlock] | type[Bottleneck]


class ResNet(nn.Module):
    """torchvision's ResNet: stem, four stages of blocks, global average pool, linear classifier."""

    def __init__(
        self, block: BlockType, layers: tuple[int, int, int, int], num_classes: int = NUM_CLASSES
    ) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block: BlockType, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers.extend(block(self.inplanes, planes) for _ in range(1, blocks))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)

    def pipeline_blocks(self) -> list[tuple[str, nn.Module]]:
        """The forward as a chain of single-tensor blocks (for ``hone pipeline``): the stem, every
        residual block, and the head. The blocks share this module's parameters."""
        stem = nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool)
        blocks: list[tuple[str, nn.Module]] = [("stem", stem)]
        for layer_name in ("layer1", "layer2", "layer3", "layer4"):
            for index, block in enumerate(getattr(self, layer_name)):
                blocks.append((f"{layer_name}.{index}", block))
        blocks.append(("head", nn.Sequential(self.avgpool, nn.Flatten(1), self.fc)))
        return blocks


_ARCHITECTURES: dict[str, tuple[BlockType, tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


def _empty_resnet(name: str) -> ResNet:
    """The architecture on the meta device: no memory, no default init, no global RNG draws."""
    block, layers = _ARCHITECTURES[name]
    with torch.device("meta"):
        return ResNet(block, layers)


@torch.no_grad()
def _init_weights(module: ResNet, generator: torch.Generator) -> None:
    """Seeded torchvision-style init, with non-identity BN affine params and fresh running stats."""
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d):
            fan_out = sub.out_channels * sub.kernel_size[0] * sub.kernel_size[1]
            sub.weight.normal_(0.0, math.sqrt(2.0 / fan_out), generator=generator)
        elif isinstance(sub, nn.BatchNorm2d):
            sub.weight.uniform_(0.5, 1.5, generator=generator)
            sub.bias.normal_(0.0, 0.1, generator=generator)
            sub.reset_running_stats()
        elif isinstance(sub, nn.Linear):
            bound = 1.0 / math.sqrt(sub.in_features)
            sub.weight.uniform_(-bound, bound, generator=generator)
            sub.bias.uniform_(-bound, bound, generator=generator)


def calibration_noise(batch_size: int, resolution_px: int, generator: torch.Generator) -> torch.Tensor:
    """Image-like noise: uniform pixels in [0, 1) normalized with the ImageNet mean and std."""
    pixels = torch.rand(batch_size, 3, resolution_px, resolution_px, generator=generator)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


@torch.no_grad()
def _calibrate_batchnorm(module: ResNet, generator: torch.Generator) -> None:
    """Fill every BN's running stats with the cumulative mean/var of seeded noise batches."""
    batchnorms = [sub for sub in module.modules() if isinstance(sub, nn.BatchNorm2d)]
    default_momenta = [bn.momentum for bn in batchnorms]
    for bn in batchnorms:
        bn.momentum = None  # cumulative moving average: running stats = mean over all batches
    module.train()
    for _ in range(CALIBRATION_BATCHES):
        module(calibration_noise(CALIBRATION_BATCH_SIZE, CALIBRATION_RESOLUTION_PX, generator))
    for bn, momentum in zip(batchnorms, default_momenta, strict=False):
        bn.momentum = momentum
    module.eval()


@torch.no_grad()
def _check_logits_sane(name: str, module: ResNet, generator: torch.Generator) -> None:
    logits = module(calibration_noise(2, 224, generator))
    largest = float(logits.abs().max())
    if not torch.isfinite(logits).all() or largest > MAX_SANE_ABS_LOGIT:
        raise RuntimeError(f"{name}: seeded weights give unusable logits (max |logit| {largest:.3g})")


def weights_path(name: str) -> Path:
    """Where the calibrated ``state_dict`` of ``name`` is cached."""
    return cache_dir() / "zoo" / f"{name}-v{VERSION}-seed{SEED}.pt"


def _save_atomically(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    """Write next to ``path`` then rename, so a concurrent or interrupted build never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp_path = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state_dict, temp_path)
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


def _create_weights(name: str) -> dict[str, torch.Tensor]:
    module = _empty_resnet(name).to_empty(device="cpu")
    generator = torch.Generator().manual_seed(SEED)
    _init_weights(module, generator)
    _calibrate_batchnorm(module, generator)
    _check_logits_sane(name, module, generator)
    return module.state_dict()


def build_resnet(name: str) -> ResNet:
    """``name`` ("resnet18" or "resnet50") in eval mode with its seeded, BN-calibrated weights."""
    path = weights_path(name)
    if path.exists():
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    else:
        logger.info("creating seeded weights for %s (cached at %s)", name, path)
        state_dict = _create_weights(name)
        _save_atomically(state_dict, path)
    module = _empty_resnet(name)
    module.load_state_dict(state_dict, assign=True)
    return module.eval()


def _builder(name: str) -> Callable[[], ResNet]:
    def build() -> ResNet:
        return build_resnet(name)

    build.__name__ = f"build_{name}"
    return build


def _zoo_model(name: str, description: str) -> ZooModel:
    return ZooModel(
        name=name,
        description=description,
        inputs=(TensorSpec("input", "float32", ("batch", 3, 224, 224)),),
        output_names=("logits",),
        build_module=_builder(name),
        provenance={
            "seed": str(SEED),
            "architecture": f"torchvision {name}",
            "weights": "seeded random (not trained), BN stats calibrated on seeded noise",
        },
        metadata={METADATA_KEY: PREPROCESS.to_json()},
        version=VERSION,
    )


RESNET18 = _zoo_model(
    "resnet18",
    "ResNet-18 (torchvision layout, 11.7M parameters), seeded random weights (not trained: its answers "
    "mean nothing) with calibrated BatchNorm; input: ImageNet-normalized RGB 224x224, output: 1000 logits",
)
RESNET50 = _zoo_model(
    "resnet50",
    "ResNet-50 (torchvision layout, 25.6M parameters), seeded random weights (not trained: its answers "
    "mean nothing) with calibrated BatchNorm; input: ImageNet-normalized RGB 224x224, output: 1000 logits",
)
