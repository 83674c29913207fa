"""The fixed choices the kernels' one-call APIs take, shared by the Triton and the WGSL kernels
(this module imports neither torch nor wgpu)."""

from __future__ import annotations

from typing import Literal

# Applied to each output element; the two backends use the same codes for them.
Activation = Literal["none", "relu", "gelu", "silu"]
TritonMatmulVariant = Literal["naive", "tiled", "tensorcore"]
WgslMatmulVariant = Literal["naive", "tiled"]
# Where BatchNormalization's channels are: dim 1 (NCHW) or dim 3 (NHWC).
Layout = Literal["nchw", "nhwc"]
