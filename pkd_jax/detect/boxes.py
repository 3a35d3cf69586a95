"""Boxes on padded candidate sets: IoU, greedy non-maximum suppression, MTCNN's box arithmetic.

Boxes are float [..., 4] as (x1, y1, x2, y2). Candidate sets have a static size with a `valid` mask, so
everything jit-compiles once per frame size. Suppression is exactly greedy NMS (a box is dropped when it
overlaps a kept box of higher score by more than the threshold), computed as the fixed point of
"keep every valid box no kept higher-scoring box suppresses" (Zheng et al., 2020, Cluster-NMS): each
round is one vectorised pass over the [N, N] overlap matrix, and the rounds needed are the length of the
longest suppression chain (a handful), not N sequential steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def overlap_matrix(boxes: jax.Array, *, mode: str = "union", plus_one: bool = False) -> jax.Array:
    """[N, N] overlaps of `boxes` [N, 4]: intersection over union ("union") or over the smaller ("min").

    `plus_one` counts pixels inclusively (width x2 - x1 + 1), as MTCNN's original NumPy NMS does;
    torchvision's NMS (facenet-pytorch's first two stages) does not.
    """
    one = 1.0 if plus_one else 0.0
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    area = (x2 - x1 + one) * (y2 - y1 + one)
    w = jnp.maximum(jnp.minimum(x2[:, None], x2[None]) - jnp.maximum(x1[:, None], x1[None]) + one, 0.0)
    h = jnp.maximum(jnp.minimum(y2[:, None], y2[None]) - jnp.maximum(y1[:, None], y1[None]) + one, 0.0)
    inter = w * h
    if mode == "min":
        return inter / jnp.minimum(area[:, None], area[None])
    if mode != "union":
        raise ValueError(f"overlap mode {mode!r}; choose 'union' or 'min'")
    return inter / (area[:, None] + area[None] - inter)


def nms(
    boxes: jax.Array,
    scores: jax.Array,
    valid: jax.Array,
    threshold: float,
    *,
    mode: str = "union",
    plus_one: bool = False,
) -> jax.Array:
    """bool [N]: which of the `valid` boxes greedy NMS keeps (in the input order); one frame's boxes."""
    order = jnp.argsort(jnp.where(valid, -scores, jnp.inf))
    ranked_valid = valid[order]
    overlaps = overlap_matrix(boxes[order], mode=mode, plus_one=plus_one)
    n = boxes.shape[0]
    rank = jnp.arange(n)
    # suppresses[j, i]: the higher-ranked box j removes box i if j is kept.
    suppresses = (overlaps > threshold) & (rank[:, None] < rank[None, :])

    def step(state: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        keep, _ = state
        new = ranked_valid & ~jnp.any(suppresses & keep[:, None], axis=0)
        return new, jnp.any(new != keep)

    keep, _ = jax.lax.while_loop(lambda s: s[1], step, (ranked_valid, jnp.array(True)))
    return jnp.zeros(n, bool).at[order].set(keep)


def top_valid(scores: jax.Array, valid: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """(indices [k], valid [k]) of the `k` best-scoring valid entries of one frame, best first."""
    k = min(k, scores.shape[0])
    _, index = jax.lax.top_k(jnp.where(valid, scores, -jnp.inf), k)
    return index, valid[index]


def regress(boxes: jax.Array, offsets: jax.Array, *, plus_one: bool) -> jax.Array:
    """Box regression: each side moves by its offset times the box's width or height.

    P-Net's candidates use widths x2 - x1 (`plus_one=False`); R-Net's and O-Net's use x2 - x1 + 1.
    """
    one = 1.0 if plus_one else 0.0
    w = boxes[..., 2] - boxes[..., 0] + one
    h = boxes[..., 3] - boxes[..., 1] + one
    size = jnp.stack([w, h, w, h], axis=-1)
    return boxes + offsets * size


def square(boxes: jax.Array) -> jax.Array:
    """The square of side max(width, height) with the same centre and top-left shift as MTCNN's `rerec`."""
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    side = jnp.maximum(w, h)
    x1 = boxes[..., 0] + w * 0.5 - side * 0.5
    y1 = boxes[..., 1] + h * 0.5 - side * 0.5
    return jnp.stack([x1, y1, x1 + side, y1 + side], axis=-1)


def crop_bounds(boxes: jax.Array, height: int, width: int) -> tuple[jax.Array, jax.Array]:
    """(int32 [..., 4] as row0, row1, col0, col1 half-open pixel ranges, non-empty mask) of each box.

    MTCNN's convention: coordinates are truncated toward zero and are 1-based, so the box reads rows
    y1 - 1 .. y2 - 1 of the image, clipped to it.
    """
    b = jnp.trunc(boxes).astype(jnp.int32)
    x1 = jnp.maximum(b[..., 0], 1)
    y1 = jnp.maximum(b[..., 1], 1)
    x2 = jnp.minimum(b[..., 2], width)
    y2 = jnp.minimum(b[..., 3], height)
    bounds = jnp.stack([y1 - 1, y2, x1 - 1, x2], axis=-1)
    return bounds, (y2 > y1 - 1) & (x2 > x1 - 1)
