"""ResNet-18, the audio trunk (log-mel spectrogram in, 512-d global-pooled feature out).

Names follow torchvision's `resnet18` (`conv1`, `bn1`, `layer1_0.conv1`, `layer2_0.downsample_0`, ...)
so its state dicts import one to one; the final `fc` is dropped as in the paper.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from pkd_jax.models.common import batch_norm, scaled
from pkd_jax.models.conv import Conv


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; a 1x1 strided projection when the shape changes."""

    channels: int
    stride: int = 1
    dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        conv = lambda c, k, s, p, name: Conv(
            c, (k, k), strides=s, padding=p, use_bias=False, dtype=self.dtype, name=name
        )
        y = conv(self.channels, 3, self.stride, 1, "conv1")(x)
        y = nn.relu(batch_norm(train, "bn1", self.dtype)(y))
        y = conv(self.channels, 3, 1, 1, "conv2")(y)
        y = batch_norm(train, "bn2", self.dtype)(y)
        if self.stride != 1 or x.shape[-1] != self.channels:
            x = conv(self.channels, 1, self.stride, 0, "downsample_0")(x)
            x = batch_norm(train, "downsample_1", self.dtype)(x)
        return nn.relu(x + y)


class ResNet18(nn.Module):
    """ResNet-18 trunk: [N, H, W, C] -> [N, 512 * width].

    C = 1 for a log-mel spectrogram (the default input), 3 for image-like input such as the released
    code's spectrogram pictures; the stem conv adapts to C.
    """

    width: float = 1.0
    dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = x.astype(self.dtype)
        x = Conv(
            scaled(64, self.width), (7, 7), strides=2, padding=3, use_bias=False,
            dtype=self.dtype, name="conv1",
        )(x)  # fmt: skip
        x = nn.relu(batch_norm(train, "bn1", self.dtype)(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage, channels in enumerate((64, 128, 256, 512), start=1):
            for block in range(2):
                stride = 2 if stage > 1 and block == 0 else 1
                x = BasicBlock(
                    scaled(channels, self.width), stride, self.dtype, name=f"layer{stage}_{block}"
                )(x, train=train)
        return jnp.mean(x, axis=(1, 2))
