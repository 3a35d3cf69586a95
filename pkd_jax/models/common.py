"""Small helpers shared by the model modules."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

Activation = Callable[[jax.Array], jax.Array]

_ACTIVATIONS: dict[str, Activation] = {
    "none": lambda x: x,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "tanh": jnp.tanh,
}


def get_activation(name: str) -> Activation:
    """Returns the activation called `name` ("none" is the identity, as in the released code)."""
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}") from None


def scaled(channels: int, width: float) -> int:
    """Channel count under a width multiplier (never below 1), so tiny models share the code."""
    return max(1, round(channels * width))


BN_MOMENTUM = 0.9  # new running statistic = BN_MOMENTUM * old + (1 - BN_MOMENTUM) * batch


def batch_norm(train: bool, name: str, dtype: DTypeLike) -> nn.BatchNorm:
    """BatchNorm with PyTorch's defaults (momentum 0.1 there is 0.9 here, eps 1e-5)."""
    return nn.BatchNorm(
        use_running_average=not train, momentum=BN_MOMENTUM, epsilon=1e-5, dtype=dtype, name=name
    )


def merge_time(x: jax.Array) -> tuple[jax.Array, tuple[int, int]]:
    """[B, T, ...] -> [B*T, ...], so per-frame trunks run as one big batch."""
    b, t = x.shape[:2]
    return x.reshape((b * t, *x.shape[2:])), (b, t)


def split_time(x: jax.Array, bt: tuple[int, int]) -> jax.Array:
    """Inverse of `merge_time`."""
    return x.reshape((*bt, *x.shape[1:]))


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling with stride 2 over [N, H, W, C] (odd sizes floor, as PyTorch's MaxPool2d(2, 2)).

    Written as a reshape and a max instead of `nn.max_pool`: on XLA:CPU the reduce-window form and its
    gradient (which tracks argmax indices) took 0.38 s per VGG19 step on 10 faces, this form 0.06 s.
    Gradients agree except where several inputs of a window tie at the maximum, where this form shares
    the gradient among them; after a ReLU such ties are zeros, whose gradient the ReLU discards anyway.
    """
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
