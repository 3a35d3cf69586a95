"""The physiological trunk: a small 1-D CNN over a window of per-frame ECG/EDA features.

Its input, per video frame, is a window of the physiological features the cache holds at 25 Hz (heart
rate, heart-rate variability, skin-conductance level and phasic response, z-scored per recording; see
docs/data.md "Physiological signals"), sampled every few frames around the frame: [W, F]. Heart rate and
skin conductance respond to arousal seconds after it changes, so a frame's evidence lies in the seconds
around and after it; the window gives the encoder that context, the convolutions its local shape (a rise,
a response), and the mean over the window a per-frame feature for the fusion head, as the audio trunk
gives one per 1-second log-mel window.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike


class PhysioEncoder(nn.Module):
    """Two strided 1-D convolutions (kernel 5), ReLU, a mean over the window and a linear layer:
    [N, W, F] -> [N, features]."""

    width: int = 32  # channels of the first convolution (the second has twice as many)
    features: int = 128  # output size, the physiological stream's feature size in fusion
    dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        del train  # no dropout or normalisation: the same network in training and inference
        x = x.astype(self.dtype)
        for i, channels in enumerate((self.width, 2 * self.width)):
            x = nn.relu(
                nn.Conv(channels, (5,), strides=(2,), padding="SAME", dtype=self.dtype, name=f"conv{i}")(x)
            )
        return nn.relu(nn.Dense(self.features, dtype=self.dtype, name="fc")(jnp.mean(x, axis=-2)))
