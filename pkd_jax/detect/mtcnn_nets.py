"""MTCNN's three networks (Zhang et al., 2016) as flax modules, NHWC, in the layout of the released weights.

The weights are those of facenet-pytorch (converted from the original Caffe models): `pkd_jax.weights`
imports them (`python -m pkd_jax.weights import --arch=mtcnn`). Two details follow that layout exactly:
max pooling rounds its output size up (Caffe's and PyTorch's `ceil_mode=True`), and the fully connected
layers of R-Net and O-Net read the feature map flattened in (width, height, channel) order, the order of
the Caffe models (their images were transposed). Inputs are RGB scaled as `(pixel - 127.5) / 128`.

Outputs: P-Net maps (face probability [N, h, w], box regression [N, h, w, 4]); R-Net (probability [N],
regression [N, 4]); O-Net (probability [N], regression [N, 4], landmarks [N, 10], five x then five y, as
fractions of the box).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

PNET_CELL = 12  # P-Net's receptive field in pixels: one output cell scores a 12 x 12 window ...
PNET_STRIDE = 2  # ... and neighbouring cells are 2 pixels apart.
RNET_SIZE = 24  # R-Net's input side in pixels.
ONET_SIZE = 48  # O-Net's input side in pixels.


class PReLU(nn.Module):
    """Parametric ReLU with one slope per channel (PyTorch's `nn.PReLU(channels)`)."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        alpha = self.param("alpha", nn.initializers.constant(0.25), (self.features,))
        return jnp.where(x >= 0, x, alpha.astype(x.dtype) * x)


def max_pool_ceil(x: jax.Array, window: int, stride: int) -> jax.Array:
    """Max pooling without padding whose output size rounds up, as PyTorch's `ceil_mode=True`.

    The last window may hang over the edge (the overhang is ignored), but never starts beyond it.
    """
    pads = []
    for size in x.shape[1:3]:
        out = math.ceil((size - window) / stride) + 1
        if (out - 1) * stride >= size:
            out -= 1
        pads.append((0, max(0, (out - 1) * stride + window - size)))
    return jax.lax.reduce_window(
        x,
        -jnp.inf,
        jax.lax.max,
        (1, window, window, 1),
        (1, stride, stride, 1),
        [(0, 0), *pads, (0, 0)],
    )


def _conv(features: int, kernel: int, name: str) -> nn.Conv:
    return nn.Conv(features, (kernel, kernel), padding="VALID", name=name)


def _flatten_caffe(x: jax.Array) -> jax.Array:
    """[N, H, W, C] -> [N, W * H * C] in (width, height, channel) order (the Caffe models' order)."""
    return jnp.transpose(x, (0, 2, 1, 3)).reshape(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal network: fully convolutional, one face score and box regression per 12 x 12 window."""

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = PReLU(10, name="prelu1")(_conv(10, 3, "conv1")(x))
        x = max_pool_ceil(x, 2, 2)
        x = PReLU(16, name="prelu2")(_conv(16, 3, "conv2")(x))
        x = PReLU(32, name="prelu3")(_conv(32, 3, "conv3")(x))
        prob = jax.nn.softmax(_conv(2, 1, "conv4_1")(x), axis=-1)[..., 1]
        return prob, _conv(4, 1, "conv4_2")(x)


class RNet(nn.Module):
    """Refinement network on 24 x 24 crops: face score and box regression."""

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = max_pool_ceil(PReLU(28, name="prelu1")(_conv(28, 3, "conv1")(x)), 3, 2)
        x = max_pool_ceil(PReLU(48, name="prelu2")(_conv(48, 3, "conv2")(x)), 3, 2)
        x = PReLU(64, name="prelu3")(_conv(64, 2, "conv3")(x))
        x = PReLU(128, name="prelu4")(nn.Dense(128, name="dense4")(_flatten_caffe(x)))
        prob = jax.nn.softmax(nn.Dense(2, name="dense5_1")(x), axis=-1)[:, 1]
        return prob, nn.Dense(4, name="dense5_2")(x)


class ONet(nn.Module):
    """Output network on 48 x 48 crops: face score, box regression and five landmarks."""

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        x = max_pool_ceil(PReLU(32, name="prelu1")(_conv(32, 3, "conv1")(x)), 3, 2)
        x = max_pool_ceil(PReLU(64, name="prelu2")(_conv(64, 3, "conv2")(x)), 3, 2)
        x = max_pool_ceil(PReLU(64, name="prelu3")(_conv(64, 3, "conv3")(x)), 2, 2)
        x = PReLU(128, name="prelu4")(_conv(128, 2, "conv4")(x))
        x = PReLU(256, name="prelu5")(nn.Dense(256, name="dense5")(_flatten_caffe(x)))
        prob = jax.nn.softmax(nn.Dense(2, name="dense6_1")(x), axis=-1)[:, 1]
        return prob, nn.Dense(4, name="dense6_2")(x), nn.Dense(10, name="dense6_3")(x)


NETWORKS = {"pnet": (PNet, PNET_CELL), "rnet": (RNet, RNET_SIZE), "onet": (ONet, ONET_SIZE)}


def expected_variables() -> dict[str, dict]:
    """{"pnet"|"rnet"|"onet": {"params": shapes}}: what a weights file must hold (no computation)."""
    out = {}
    for name, (cls, size) in NETWORKS.items():
        dummy = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
        out[name] = jax.eval_shape(cls().init, jax.random.key(0), dummy)
    return out
