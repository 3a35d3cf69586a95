"""Five-landmark face alignment: the similarity transform onto a canonical template, then a warp.

The template is the five-point layout of 112 x 112 aligned face crops used by ArcFace/InsightFace (left
eye, right eye, nose tip, left and right mouth corners, in pixels), the convention of aligned face
datasets; other crop sizes scale it. The transform (rotation, uniform scale, translation, no reflection)
is the least-squares fit of Umeyama (1991).
"""

from __future__ import annotations

import cv2
import numpy as np

TEMPLATE_SIZE = 112
TEMPLATE = np.array(
    [
        [38.2946, 51.6963],  # left eye (the subject's right, on the image's left)
        [73.5318, 51.5014],  # right eye
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # left mouth corner
        [70.7299, 92.2041],  # right mouth corner
    ],
    np.float64,
)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """float64 [2, 3]: the similarity mapping points `source` [K, 2] closest to `target` [K, 2].

    Raises:
      ValueError: fewer than two points, non-finite points, or all source points in one place.
    """
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2 or len(source) < 2:
        raise ValueError(f"need matching [K >= 2, 2] point sets, got {source.shape} and {target.shape}")
    if not (np.isfinite(source).all() and np.isfinite(target).all()):
        raise ValueError("landmarks must be finite")
    mu_s, mu_t = source.mean(axis=0), target.mean(axis=0)
    s, t = source - mu_s, target - mu_t
    variance = (s**2).sum() / len(s)
    if variance < 1e-12:
        raise ValueError("the landmarks coincide; no transform fits them")
    u, sigma, vt = np.linalg.svd(t.T @ s / len(s))
    d = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ d @ vt
    scale = float((sigma * np.diag(d)).sum() / variance)
    shift = mu_t - scale * rotation @ mu_s
    return np.concatenate([scale * rotation, shift[:, None]], axis=1)


def aligned_crop(frame_rgb: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: `frame_rgb` warped so that `landmarks` [5, 2] land on the template.

    A face much larger than the crop is first shrunk by area averaging (a bilinear warp alone would alias).
    """
    target = TEMPLATE * (size / TEMPLATE_SIZE)
    landmarks = np.asarray(landmarks, np.float64)
    matrix = similarity_transform(landmarks, target)
    shrink = 2.0 * float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if shrink < 1.0:
        height, width = frame_rgb.shape[:2]
        small = (max(1, round(width * shrink)), max(1, round(height * shrink)))
        frame_rgb = cv2.resize(frame_rgb, small, interpolation=cv2.INTER_AREA)
        landmarks = landmarks * (np.array(small) / (width, height))
        matrix = similarity_transform(landmarks, target)
    return cv2.warpAffine(
        frame_rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
