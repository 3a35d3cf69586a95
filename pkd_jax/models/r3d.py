"""R3D-18 (3D ResNet-18), the visual trunk of the strong (Aff-Wild2) setting.

The architecture of torchvision's `r3d_18` (Tran et al., "A Closer Look at Spatiotemporal Convolutions"):
a (3, 7, 7) stem with stride (1, 2, 2), four stages of two basic blocks of full 3x3x3 convolutions, the
first block of stages 2-4 striding by 2 over time, height and width, and global average pooling. There
is no max pool. An 8 x 112 x 112 clip leaves a 1 x 7 x 7 map before pooling.

Names follow torchvision's state dict so its Kinetics-400 weights import one to one with
`pkd_jax.weights.r3d18_from_torch`: `stem.0` (conv) -> `stem_0`, `stem.1` (BN) -> `stem_1`,
`layer2.0.conv1.0` -> `layer2_0/conv1_0`, `layer2.0.conv1.1` (its BN) -> `layer2_0/conv1_1`,
`layer2.0.downsample.{0,1}` -> `layer2_0/downsample_{0,1}`. The 400-class `fc` is not part of the trunk.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from pkd_jax.models.common import batch_norm, scaled
from pkd_jax.models.conv import Conv

# Kinetics-400 normalisation of torchvision's video models (RGB in [0, 1]).
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
STAGES = (64, 128, 256, 512)


class BasicBlock3D(nn.Module):
    """Two 3x3x3 convs with a residual; a strided 1x1x1 projection when the shape changes."""

    channels: int
    stride: int = 1
    dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        def conv(kernel: int, stride: int, name: str) -> Conv:
            return Conv(
                self.channels, (kernel,) * 3, strides=stride, padding=kernel // 2,
                use_bias=False, dtype=self.dtype, name=name,
            )  # fmt: skip

        y = conv(3, self.stride, "conv1_0")(x)
        y = nn.relu(batch_norm(train, "conv1_1", self.dtype)(y))
        y = conv(3, 1, "conv2_0")(y)
        y = batch_norm(train, "conv2_1", self.dtype)(y)
        if self.stride != 1 or x.shape[-1] != self.channels:
            x = conv(1, self.stride, "downsample_0")(x)
            x = batch_norm(train, "downsample_1", self.dtype)(x)
        return nn.relu(x + y)


class R3D18(nn.Module):
    """R3D-18 trunk: clips [N, T, H, W, 3] in [0, 1] -> [N, 512 * width].

    `normalize` applies the Kinetics-400 mean and std first, as torchvision's pretrained weights expect;
    `width` scales every stage (tests and CPU demos use a fraction of the network).
    """

    width: float = 1.0
    normalize: bool = True
    dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if x.ndim != 5:
            raise ValueError(f"R3D-18 takes clips [N, T, H, W, C], got shape {x.shape}")
        x = x.astype(self.dtype)
        if self.normalize:
            mean = jnp.asarray(KINETICS_MEAN, self.dtype)
            std = jnp.asarray(KINETICS_STD, self.dtype)
            x = (x - mean) / std
        x = Conv(
            scaled(STAGES[0], self.width), (3, 7, 7), strides=(1, 2, 2), padding=(1, 3, 3),
            use_bias=False, dtype=self.dtype, name="stem_0",
        )(x)  # fmt: skip
        x = nn.relu(batch_norm(train, "stem_1", self.dtype)(x))
        for stage, channels in enumerate(STAGES, start=1):
            for block in range(2):
                stride = 2 if stage > 1 and block == 0 else 1
                x = BasicBlock3D(
                    scaled(channels, self.width), stride, self.dtype, name=f"layer{stage}_{block}"
                )(x, train=train)
        return jnp.mean(x, axis=(1, 2, 3))
