"""What a face detector answers: a box, and where the detector gives them a score and five landmarks.

Apart from `pkd_jax.data.faces` so that detectors (`pkd_jax.detect`) can return it without importing the
detector registry.
"""

from __future__ import annotations

import dataclasses

import numpy as np

Box = tuple[int, int, int, int]  # x, y, width, height in frame pixels


@dataclasses.dataclass(frozen=True)
class Face:
    """A detected face: its box, and where the detector gives them its score and five landmarks.

    landmarks: float32 [5, 2] (x, y) in frame pixels: left eye, right eye, nose, left and right mouth
    corners (as seen in the image).
    """

    box: Box
    landmarks: np.ndarray | None = None
    score: float | None = None
