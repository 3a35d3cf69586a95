"""MTCNN's three-stage cascade on a batch of frames, jit-compiled once per frame size.

The stages follow facenet-pytorch's `detect_face` (the reference the tests compare with):

1. Image pyramid from `min_face` (scales 12 / min_face x factor^k while the shorter side stays >= 12 px),
   P-Net on each level; windows scoring >= thresholds[0] become boxes, NMS 0.5 within each level, NMS
   0.7 over all levels, P-Net's box regression, squared.
2. R-Net on 24 x 24 crops of those boxes; > thresholds[1] kept, NMS 0.7, R-Net's regression, squared.
3. O-Net on 48 x 48 crops; > thresholds[2] kept, landmarks read off the boxes, O-Net's regression,
   NMS 0.7 over the smaller box's area ("Min").

Where the reference keeps every candidate, shapes here are static: each stage keeps at most a fixed number
of its best-scoring candidates (`CascadeSettings`), so a frame with more candidates than that loses the
lowest-scoring ones (`Detections.overflow` counts frames where that happened). The defaults were checked
against the reference on the test photos (tests/detect) and are far above what a one-person frame needs.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pkd_jax.detect import boxes as bx
from pkd_jax.detect.mtcnn_nets import ONET_SIZE, PNET_CELL, PNET_STRIDE, RNET_SIZE, ONet, PNet, RNet
from pkd_jax.detect.resample import crop_area, resize_area, summed_area_table

Params = dict[str, Any]  # {"pnet": variables, "rnet": variables, "onet": variables}


@dataclasses.dataclass(frozen=True)
class CascadeSettings:
    """The cascade's settings (hashable: one compilation per settings and frame size).

    Attributes:
      min_face: Smallest face side searched, in pixels of the frames given.
      thresholds: Face-probability thresholds of P-Net, R-Net and O-Net (facenet-pytorch's defaults).
      factor: Scale step of the image pyramid.
      pnet_candidates: Best P-Net windows kept per pyramid level before its NMS.
      rnet_candidates: Best first-stage boxes given to R-Net.
      onet_candidates: Best second-stage boxes given to O-Net (also the most faces returned per frame).
    """

    min_face: float = 20.0
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    factor: float = 0.709
    pnet_candidates: int = 512
    rnet_candidates: int = 128
    onet_candidates: int = 32

    def __post_init__(self) -> None:
        if self.min_face < PNET_CELL:
            raise ValueError(f"min_face={self.min_face} px: MTCNN finds no face smaller than {PNET_CELL} px")
        if not 0 < self.factor < 1:
            raise ValueError(f"factor={self.factor} must be in (0, 1)")
        if min(self.pnet_candidates, self.rnet_candidates, self.onet_candidates) < 1:
            raise ValueError("candidate counts must be positive")


class Detections(NamedTuple):
    """Faces of a batch of frames, best-scoring first, `valid` marking the real ones.

    boxes [N, K, 4] (x1, y1, x2, y2) in frame pixels; scores [N, K]; landmarks [N, K, 5, 2] (x, y): left
    eye, right eye, nose, left and right mouth corners; valid bool [N, K]; overflow bool [N]: a stage
    had more candidates than its static limit (the weakest were dropped).
    """

    boxes: jax.Array
    scores: jax.Array
    landmarks: jax.Array
    valid: jax.Array
    overflow: jax.Array


def pyramid(height: int, width: int, min_face: float, factor: float) -> list[tuple[float, int, int]]:
    """(scale, height, width) of each pyramid level, as facenet-pytorch computes them."""
    scale = PNET_CELL / min_face
    shorter = min(height, width) * scale
    levels = []
    while shorter >= PNET_CELL:
        levels.append((scale, int(height * scale + 1), int(width * scale + 1)))
        scale *= factor
        shorter *= factor
    return levels


def _normalise(pixels: jax.Array) -> jax.Array:
    return (pixels - 127.5) * 0.0078125


def _apply(network: Any, variables: Any, x: jax.Array) -> Any:
    """The network's outputs (a tuple of arrays; flax's `apply` is typed too loosely for mypy)."""
    return network.apply(variables, x)


def _pnet_level(
    params: Params, frames: jax.Array, level: tuple[float, int, int], s: CascadeSettings
) -> tuple[jax.Array, ...]:
    """One pyramid level: candidate boxes [N, k, 4], scores, regressions, kept mask, overflow [N]."""
    scale, height, width = level
    prob, reg = _apply(PNet(), params["pnet"], _normalise(resize_area(frames, height, width)))
    n, rows, cols = prob.shape
    prob, reg = prob.reshape(n, -1), reg.reshape(n, rows * cols, 4)
    above = prob >= s.thresholds[0]
    index, valid = jax.vmap(functools.partial(bx.top_valid, k=s.pnet_candidates))(prob, above)
    row, col = (index // cols).astype(jnp.float32), (index % cols).astype(jnp.float32)
    scale32 = np.float32(scale)
    start = jnp.floor((PNET_STRIDE * jnp.stack([col, row], -1) + 1) / scale32)
    end = jnp.floor((PNET_STRIDE * jnp.stack([col, row], -1) + PNET_CELL) / scale32)
    boxes = jnp.concatenate([start, end], axis=-1)
    scores = jnp.take_along_axis(prob, index, axis=1)
    offsets = jnp.take_along_axis(reg, index[..., None], axis=1)
    keep = jax.vmap(functools.partial(bx.nms, threshold=0.5))(boxes, scores, valid)
    return boxes, scores, offsets, keep, above.sum(axis=1) > index.shape[1]


def _crops(
    table: jax.Array, boxes: jax.Array, valid: jax.Array, size: int, frame_hw: Any
) -> tuple[jax.Array, jax.Array]:
    """Normalised crops [N * k, size, size, 3] of boxes [N, k, 4] and the mask of non-empty ones."""
    bounds, nonempty = bx.crop_bounds(boxes, *frame_hw)
    crops = jax.vmap(jax.vmap(crop_area, in_axes=(None, 0, None)), in_axes=(0, 0, None))(table, bounds, size)
    return _normalise(crops.reshape(-1, size, size, crops.shape[-1])), valid & nonempty


def _gather(index: jax.Array, *arrays: jax.Array) -> list[jax.Array]:
    return [jnp.take_along_axis(a, index.reshape(index.shape + (1,) * (a.ndim - 2)), axis=1) for a in arrays]


Stage3 = tuple[jax.Array, jax.Array, jax.Array, jax.Array]  # boxes, scores, landmarks, valid


def _stage3(
    params: Params, table: jax.Array, boxes: jax.Array, valid: jax.Array, s: CascadeSettings, frame_hw: Any
) -> Stage3:
    """O-Net on squared boxes [N, k, 4]: (boxes, scores, landmarks, valid), not yet suppressed."""
    n, k = valid.shape
    crops, valid = _crops(table, boxes, valid, ONET_SIZE, frame_hw)
    prob, reg, points = _apply(ONet(), params["onet"], crops)
    prob, reg, points = prob.reshape(n, k), reg.reshape(n, k, 4), points.reshape(n, k, 10)
    valid = valid & (prob > s.thresholds[2])
    w = boxes[..., 2] - boxes[..., 0] + 1
    h = boxes[..., 3] - boxes[..., 1] + 1
    xs = w[..., None] * points[..., :5] + boxes[..., :1] - 1
    ys = h[..., None] * points[..., 5:] + boxes[..., 1:2] - 1
    return bx.regress(boxes, reg, plus_one=True), prob, jnp.stack([xs, ys], axis=-1), valid


def _final_nms(found: Stage3, overflow: jax.Array) -> Detections:
    boxes, scores, landmarks, valid = found
    keep = jax.vmap(functools.partial(bx.nms, threshold=0.7, mode="min", plus_one=True))(boxes, scores, valid)
    index, valid = jax.vmap(functools.partial(bx.top_valid, k=valid.shape[1]))(scores, keep)
    boxes, scores, landmarks = _gather(index, boxes, scores, landmarks)
    return Detections(boxes, scores, landmarks, valid, overflow)


@functools.partial(jax.jit, static_argnames=("settings",))
def detect_faces(params: Params, frames: jax.Array, settings: CascadeSettings) -> Detections:
    """Every face MTCNN finds in uint8 RGB `frames` [N, H, W, 3] (one compilation per size and settings)."""
    s = settings
    frame_hw = (int(frames.shape[1]), int(frames.shape[2]))
    pixels = frames.astype(jnp.float32)
    levels = [_pnet_level(params, pixels, lv, s) for lv in pyramid(*frame_hw, s.min_face, s.factor)]
    if not levels:
        raise ValueError(f"frames of {frame_hw} pixels are smaller than min_face={s.min_face}")
    boxes, scores, offsets, keep = (jnp.concatenate([lv[i] for lv in levels], axis=1) for i in range(4))
    overflow = jnp.any(jnp.stack([lv[4] for lv in levels]), axis=0)
    keep = jax.vmap(functools.partial(bx.nms, threshold=0.7))(boxes, scores, keep)
    overflow |= keep.sum(axis=1) > s.rnet_candidates
    index, valid = jax.vmap(functools.partial(bx.top_valid, k=s.rnet_candidates))(scores, keep)
    boxes, offsets = _gather(index, boxes, offsets)
    boxes = bx.square(bx.regress(boxes, offsets, plus_one=False))

    table = summed_area_table(frames)
    n, k = valid.shape
    crops, valid = _crops(table, boxes, valid, RNET_SIZE, frame_hw)
    prob, reg = _apply(RNet(), params["rnet"], crops)
    prob, reg = prob.reshape(n, k), reg.reshape(n, k, 4)
    valid = valid & (prob > s.thresholds[1])
    keep = jax.vmap(functools.partial(bx.nms, threshold=0.7))(boxes, prob, valid)
    overflow |= keep.sum(axis=1) > s.onet_candidates
    index, valid = jax.vmap(functools.partial(bx.top_valid, k=s.onet_candidates))(prob, keep)
    boxes, reg = _gather(index, boxes, reg)
    boxes = bx.square(bx.regress(boxes, reg, plus_one=True))

    return _final_nms(_stage3(params, table, boxes, valid, s, frame_hw), overflow)


@functools.partial(jax.jit, static_argnames=("settings",))
def refine_faces(
    params: Params, frames: jax.Array, prior: jax.Array, prior_valid: jax.Array, settings: CascadeSettings
) -> Detections:
    """O-Net alone on one prior box per frame (`prior` [N, 4], e.g. the face of a nearby frame).

    The tracking step: a face that moved little is found again at the cost of one O-Net crop; where
    O-Net rejects the box (`valid` False) a full `detect_faces` is needed.
    """
    table = summed_area_table(frames)
    boxes = bx.square(prior)[:, None]
    boxes, scores, landmarks, valid = _stage3(
        params, table, boxes, prior_valid[:, None], settings, frames.shape[1:3]
    )
    return Detections(boxes, scores, landmarks, valid, jnp.zeros(frames.shape[0], bool))
