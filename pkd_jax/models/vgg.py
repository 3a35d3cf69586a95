"""VGG19 with batch norm, the visual trunk of the weak (RECOLA) setting.

Layer names follow torchvision's `vgg19_bn` feature indices (`features_0` is the first conv, `features_1`
its BatchNorm, ...), so PyTorch state dicts map onto these params one to one (see `pkd_jax.weights`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from pkd_jax.models.common import batch_norm, max_pool_2x2, scaled
from pkd_jax.models.conv import Conv

# "M" is a 2x2 max pool; numbers are 3x3 conv output channels (torchvision's config "E").
PlanItem = int | Literal["M"]
VGG19_PLAN: tuple[PlanItem, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
    512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)  # fmt: skip


def feature_layer_indices(plan: Sequence[PlanItem] = VGG19_PLAN) -> list[int]:
    """torchvision `features.<i>` index of each conv in `plan` (its BatchNorm is at i + 1)."""
    indices, position = [], 0
    for item in plan:
        if item == "M":
            position += 1
        else:
            indices.append(position)
            position += 3  # conv, bn, relu
    return indices


class VGG19BN(nn.Module):
    """Per-image VGG19-BN trunk: [N, H, W, 3] in [0, 1] -> [N, embed_dim].

    112x112 input gives a 512x3x3 map -> flatten (4608) -> dropout -> linear -> dropout, as in the
    paper's released code. `width` scales every conv; `embed_dim` sets the linear output.
    """

    width: float = 1.0
    embed_dim: int = 512
    dropout: float = 0.2
    out_dropout: float = 0.2
    plan: tuple[PlanItem, ...] = VGG19_PLAN
    dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = x.astype(self.dtype)
        layer_idx = iter(feature_layer_indices(self.plan))
        for item in self.plan:
            if item == "M":
                x = max_pool_2x2(x)
                continue
            idx = next(layer_idx)
            x = Conv(scaled(item, self.width), (3, 3), padding=1, dtype=self.dtype, name=f"features_{idx}")(x)
            x = batch_norm(train, f"features_{idx + 1}", self.dtype)(x)
            x = nn.relu(x)
        # Flatten channel-major like PyTorch's NCHW `view`, so imported fc weights need no permutation.
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape((x.shape[0], -1))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = nn.Dense(self.embed_dim, dtype=self.dtype, name="fc")(x)
        return nn.Dropout(self.out_dropout, deterministic=not train)(x)
