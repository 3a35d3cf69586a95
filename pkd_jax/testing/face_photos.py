"""Real-photo test images for face detection: scikit-image's astronaut cropped, scaled, rotated by up to
30 degrees and partly covered, each with where its face centre is (for hit / false-positive counts)."""

from __future__ import annotations

import cv2
import numpy as np
import skimage.data

FACE_CENTRE = (225.0, 117.0)  # the astronaut's face centre in the 512 x 512 photo (x, y), by eye


def _moved(matrix: np.ndarray) -> tuple[float, float]:
    x, y = matrix @ np.array([*FACE_CENTRE, 1.0])
    return float(x), float(y)


def photo_variants(side: int = 256) -> dict[str, tuple[np.ndarray, tuple[float, float]]]:
    """name -> (uint8 [side, side, 3] image, face centre (x, y) in it); all images have the same size."""
    photo = skimage.data.astronaut()
    shrink = side / 512
    scale = np.array([[shrink, 0, 0], [0, shrink, 0]])
    full = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
    out = {"whole": (full, _moved(scale))}
    mirror = np.array([[-shrink, 0, side - 1], [0, shrink, 0]])
    out["mirrored"] = (np.ascontiguousarray(full[:, ::-1]), _moved(mirror))
    x0, y0, crop = 60, 20, 320
    zoom = side / crop
    out["crop"] = (
        cv2.resize(photo[y0 : y0 + crop, x0 : x0 + crop], (side, side), interpolation=cv2.INTER_AREA),
        _moved(np.array([[zoom, 0, -x0 * zoom], [0, zoom, -y0 * zoom]])),
    )
    small_side, offset = round(side * 0.625), (round(side * 0.16), round(side * 0.27))
    small = np.full((side, side, 3), 90, np.uint8)
    small[offset[1] : offset[1] + small_side, offset[0] : offset[0] + small_side] = cv2.resize(
        photo, (small_side, small_side), interpolation=cv2.INTER_AREA
    )
    f = small_side / 512
    out["small"] = (small, _moved(np.array([[f, 0, offset[0]], [0, f, offset[1]]])))
    centre = (side * 0.45, side * 0.22)
    for angle in (-30, -15, 15, 30):
        rotation = cv2.getRotationMatrix2D(centre, angle, 1.0)
        image = cv2.warpAffine(full, rotation, (side, side), borderMode=cv2.BORDER_REFLECT)
        out[f"rotated{angle:+d}"] = (
            image,
            _moved(np.vstack([rotation, [0, 0, 1]])[:2] @ np.vstack([scale, [0, 0, 1]])),
        )
    cx, cy = _moved(scale)
    mouth = full.copy()
    mouth[
        round(cy + 0.04 * side) : round(cy + 0.1 * side), round(cx - 0.06 * side) : round(cx + 0.06 * side)
    ] = 20
    out["mouth_covered"] = (mouth, (cx, cy))
    eye = full.copy()
    eye[
        round(cy - 0.07 * side) : round(cy - 0.02 * side), round(cx - 0.07 * side) : round(cx - 0.01 * side)
    ] = 240
    out["eye_covered"] = (eye, (cx, cy))
    return out
