"""The `mtcnn` face detector of `pkd_jax.data.faces`: MTCNN in JAX on batches of frames, with tracking.

Frames wider than `detect_width` are shrunk first (as for Haar), the smallest face searched is
`min_face_fraction` of the shorter side, and of the faces found the largest is kept, with its score and
five landmarks mapped back to frame pixels.

Tracking (`redetect_every` > 1): every `redetect_every`-th frame of a video gets a full detection; the
frames between are checked by O-Net alone on the last full detection's face, which costs one 48 x 48 crop
instead of the whole pyramid, and any frame where O-Net rejects that box gets a full detection after all,
so tracking never loses a face a full detection would find near the previous one. A larger face appearing
elsewhere is picked up at the next full detection. Frames go to the cascade `batch_frames` at a time (the last
batch padded), or one at a time when there are few (the key frames of tracking), so each frame size
compiles at most two programs of each kind.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import cv2
import jax.numpy as jnp
import numpy as np

from pkd_jax.data.face_box import Face
from pkd_jax.detect.mtcnn import CascadeSettings, Detections, detect_faces, refine_faces
from pkd_jax.detect.mtcnn_nets import PNET_CELL
from pkd_jax.weights.mtcnn import load_mtcnn_weights

Found = tuple[np.ndarray, float, np.ndarray]  # box (x1, y1, x2, y2), score, landmarks [5, 2]


class MtcnnDetector:
    """MTCNN face detection (see the module docstring); call `reset()` between videos.

    Args:
      weights: The `.npz` written by `python -m pkd_jax.weights import --arch=mtcnn` (required).
      detect_width: Frames wider than this are shrunk to it before detection; results are mapped back.
      min_face_fraction: Smallest face side searched, as a fraction of the frame's shorter side.
      redetect_every: Frames between full detections; 1 runs a full detection on every frame.
      batch_frames: Frames detected in one call (the largest padded batch).
      settings: Cascade thresholds and candidate limits; `min_face` is set from `min_face_fraction`.
    """

    def __init__(
        self,
        weights: str = "",
        detect_width: int = 320,
        min_face_fraction: float = 0.15,
        redetect_every: int = 10,
        batch_frames: int = 16,
        settings: CascadeSettings | None = None,
        **unused: Any,
    ):
        del unused  # Options meant for other detectors.
        if not weights:
            raise ValueError(
                "the mtcnn face detector needs its weights: convert facenet-pytorch's with `python -m "
                "pkd_jax.weights import --arch=mtcnn --src=<wheel> --out=mtcnn.npz` and pass "
                "--detector_weights=mtcnn.npz (data.detector_weights in a training config)"
            )
        self.params = load_mtcnn_weights(weights)  # checked: exactly the three networks' parameters
        self.detect_width = detect_width
        self.min_face_fraction = min_face_fraction
        self.redetect_every = max(1, redetect_every)
        self.batch_frames = max(1, batch_frames)
        self.base_settings = settings or CascadeSettings()
        self.full_detections = 0  # frames that ran the whole cascade (for measurements)
        self.reset()

    def reset(self) -> None:
        """Forgets the tracked face (a new video starts)."""
        self._previous: np.ndarray | None = None  # x1, y1, x2, y2 in detection pixels
        self._frame_index = 0

    def detect(self, frame_rgb: np.ndarray) -> Face | None:
        """The largest face of one frame (prefer `detect_batch` for many frames)."""
        return self.detect_batch([frame_rgb])[0]

    def _shrunk(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, float]:
        height, width = frames[0].shape[:2]
        scale = min(1.0, self.detect_width / width)
        if scale == 1.0:
            return np.stack(frames), scale
        size = (round(width * scale), round(height * scale))
        return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]), scale

    def _settings(self, height: int, width: int) -> CascadeSettings:
        min_face = max(float(PNET_CELL), self.min_face_fraction * min(height, width))
        return dataclasses.replace(self.base_settings, min_face=min_face)

    def _padded(self, fn: Any, frames: np.ndarray, *extra: np.ndarray) -> Detections:
        """`fn` on `frames` in calls of `batch_frames` (the last padded), or one frame at a time when there
        are at most a quarter of that: two compiled batch sizes per frame size; numpy results."""
        size = 1 if 4 * len(frames) <= self.batch_frames else self.batch_frames
        parts = []
        for start in range(0, len(frames), size):
            chunk = [a[start : start + size] for a in (frames, *extra)]
            n = len(chunk[0])
            padded = [np.concatenate([a, np.repeat(a[-1:], size - n, axis=0)]) for a in chunk]
            out = fn(self.params, *map(jnp.asarray, padded))
            parts.append([np.asarray(x)[:n] for x in out])
        joined: list[Any] = [np.concatenate(p) for p in zip(*parts, strict=True)]
        return Detections(*joined)

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[Face | None]:
        """The largest face of each of consecutive `frames` of one video (uint8 RGB, equal sizes)."""
        if len(frames) == 0:
            return []
        small, scale = self._shrunk(frames)
        settings = self._settings(*small.shape[1:3])
        n = len(small)
        full = np.array([(self._frame_index + i) % self.redetect_every == 0 for i in range(n)])
        if self._previous is None:
            full[0] = True
        results: list[Found | None] = [None] * n
        self._run_full(small, np.flatnonzero(full), settings, results)
        # Between full detections: O-Net on the face of the last full detection before each frame.
        priors: list[np.ndarray | None] = []
        previous = self._previous
        for i in range(n):
            if full[i]:
                result = results[i]
                previous = result[0] if result is not None else None
            priors.append(previous)
        tracked = [(i, p) for i, p in enumerate(priors) if not full[i] and p is not None]
        if tracked:
            index = [i for i, _ in tracked]
            prior = np.stack([p for _, p in tracked]).astype(np.float32)
            refine = functools.partial(refine_faces, settings=settings)
            found = self._padded(refine, small[index], prior, np.ones(len(index), bool))
            for j, i in enumerate(index):
                results[i] = self._largest(found, j)
        retry = [i for i in range(n) if not full[i] and results[i] is None]
        self._run_full(small, np.asarray(retry, int), settings, results)
        self._frame_index += n
        last = results[-1]
        self._previous = last[0] if last is not None else None
        return [None if r is None else self._to_frame(r, scale) for r in results]

    def _run_full(
        self, small: np.ndarray, index: np.ndarray, settings: CascadeSettings, results: list[Found | None]
    ) -> None:
        if len(index) == 0:
            return
        found = self._padded(functools.partial(detect_faces, settings=settings), small[index])
        self.full_detections += len(index)
        for j, i in enumerate(index):
            results[int(i)] = self._largest(found, j)

    @staticmethod
    def _largest(found: Detections, j: int) -> Found | None:
        valid = np.asarray(found.valid[j])
        if not valid.any():
            return None
        boxes = np.asarray(found.boxes[j])
        area = np.where(valid, (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), -np.inf)
        k = int(np.argmax(area))
        return boxes[k], float(found.scores[j][k]), np.asarray(found.landmarks[j][k])

    @staticmethod
    def _to_frame(found: Found, scale: float) -> Face:
        box, score, landmarks = found
        x1, y1, x2, y2 = (float(v) / scale for v in box)
        return Face(
            box=(round(x1), round(y1), max(1, round(x2 - x1)), max(1, round(y2 - y1))),
            landmarks=(landmarks / scale).astype(np.float32),
            score=score,
        )
