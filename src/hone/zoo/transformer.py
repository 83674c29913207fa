"""A stack of transformer encoder layers with seeded weights: the pipeline-parallel workload.

Each layer is torch's ``nn.TransformerEncoderLayer`` (pre-norm, GELU, no dropout so that a step
is deterministic), and the model is a plain ``nn.Sequential`` of them, so it splits into one block
per layer with a (batch, sequence, width) tensor between blocks. The zoo entry is small (8 layers
of width 256); ``build_stack`` makes any size, e.g. compute-heavy stacks for benchmarks/pipeline.py.
"""

from __future__ import annotations

import torch
from torch import nn

from hone.specs import TensorSpec
from hone.zoo.types import ZooModel

SEED = 20261129
LAYERS = 8
WIDTH = 256
HEADS = 4
SEQUENCE = 128


def build_stack(
    layers: int = LAYERS, width: int = WIDTH, heads: int = HEADS, *, seed: int = SEED
) -> nn.Sequential:
    """``layers`` encoder layers of ``width`` (feed-forward 4x width), same weights for the same seed."""
    generator = torch.Generator().manual_seed(seed)
    stack = nn.Sequential(
        *(
            nn.TransformerEncoderLayer(
                width,
                heads,
                dim_feedforward=4 * width,
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(layers)
        )
    )
    with torch.no_grad():
        for name, parameter in stack.named_parameters():
            if parameter.dim() > 1:
                bound = (6.0 / sum(parameter.shape[:2])) ** 0.5  # Xavier-uniform, from our generator
                parameter.copy_(torch.rand(parameter.shape, generator=generator) * 2 * bound - bound)
            elif "norm" not in name:
                parameter.zero_()
    return stack.eval()


TRANSFORMER_STACK = ZooModel(
    name="transformer_stack",
    description=(
        f"{LAYERS} pre-norm transformer encoder layers (width {WIDTH}, {HEADS} heads, GELU), seeded "
        "weights; input: (batch, sequence, 256) hidden states; the pipeline-parallel workload"
    ),
    inputs=(TensorSpec("hidden", "float32", ("batch", "sequence", WIDTH)),),
    output_names=("output",),
    build_module=build_stack,
    default_dims={"sequence": SEQUENCE},
    provenance={"seed": str(SEED), "architecture": "torch.nn.TransformerEncoderLayer stack"},
)
