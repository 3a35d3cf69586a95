"""Area resampling as PyTorch's `interpolate(mode="area")` (adaptive average pooling), in JAX.

Output pixel i of a side resized from n to m averages input pixels floor(i n / m) .. ceil((i + 1) n / m)
- 1. Whole frames (MTCNN's image pyramid) are resized by two static averaging matrices; boxes of any size
(the R-Net and O-Net crops) are read from an integer summed-area table, four lookups per output pixel,
so cropping a box costs the same whatever its size and its sums are exact.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_INT32_LIMIT = 2**31 - 1


def area_matrix(size_in: int, size_out: int) -> np.ndarray:
    """float32 [size_out, size_in]: row i averages the input pixels of output pixel i."""
    i = np.arange(size_out)
    start = (i * size_in) // size_out
    end = -((-(i + 1) * size_in) // size_out)  # ceil
    cols = np.arange(size_in)
    inside = (cols[None] >= start[:, None]) & (cols[None] < end[:, None])
    return (inside / (end - start)[:, None]).astype(np.float32)


def resize_area(images: jax.Array, height: int, width: int) -> jax.Array:
    """float32 [N, H, W, C] -> [N, height, width, C] by area averaging (exact float32 matmuls)."""
    rows = jnp.asarray(area_matrix(images.shape[1], height))
    cols = jnp.asarray(area_matrix(images.shape[2], width))
    high = jax.lax.Precision.HIGHEST  # no TF32/bf16 passes on accelerators
    out = jnp.einsum("hH,nHWc->nhWc", rows, images, precision=high)
    return jnp.einsum("wW,nhWc->nhwc", cols, out, precision=high)


def summed_area_table(frames: jax.Array) -> jax.Array:
    """int32 [N, H + 1, W + 1, C] inclusive prefix sums of uint8 `frames` [N, H, W, C], zero-padded."""
    _, height, width, _ = frames.shape
    if 255 * height * width > _INT32_LIMIT:
        raise ValueError(f"frames of {height} x {width} pixels are too large for an int32 summed-area table")
    table = jnp.cumsum(jnp.cumsum(frames.astype(jnp.int32), axis=1), axis=2)
    return jnp.pad(table, ((0, 0), (1, 0), (1, 0), (0, 0)))


def crop_area(table: jax.Array, bounds: jax.Array, size: int) -> jax.Array:
    """float32 [size, size, C]: the box `bounds` (row0, row1, col0, col1; int32) of one frame's summed-area
    `table` [H + 1, W + 1, C], area-resized to size x size. Empty boxes give garbage (mask them)."""
    i = jnp.arange(size)

    def edges(lo: jax.Array, hi: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        n = jnp.maximum(hi - lo, 1)
        start = lo + (i * n) // size
        end = lo + ((i + 1) * n + size - 1) // size
        return start, end, end - start

    r0, r1, nr = edges(bounds[0], bounds[1])
    c0, c1, nc = edges(bounds[2], bounds[3])
    total = table[r1][:, c1] - table[r0][:, c1] - table[r1][:, c0] + table[r0][:, c0]
    return total.astype(jnp.float32) / (nr[:, None, None] * nc[None, :, None]).astype(jnp.float32)
