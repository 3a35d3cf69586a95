"""Face detection and cropping: a `FaceDetector` protocol, a name registry, and the OpenCV Haar default.

A detector maps one RGB frame to the face to keep: a `Face` (box, and five landmarks where the detector
gives them), a bare box `(x, y, w, h)` in frame pixels, or None. Detectors that work on many frames at
once (MTCNN in JAX) also have `detect_batch`. `FaceCropper` turns each face into a crop of `face_size`
pixels: the square around the box (`face_align="none"`) or the landmarks warped onto a canonical template
(`"landmarks"`, see `pkd_jax.detect.landmark_align`); frames without a face give a black crop and
`found=False` (the retain-last-face policy is applied at load time, not here).

Built in: `haar` (OpenCV's cascade, host CPU, no landmarks) and `mtcnn` (`pkd_jax.detect`, the paper's
detector, with landmarks; needs converted weights, see docs/data.md "MTCNN").

Detectors are chosen by registered name only: `create_detector` looks the name up and never imports
anything, because the name comes from data files (a cache manifest, which a shared workdir may ship), and
a file must not be able to make pkd_jax run code. A detector of your own lives in a plugin module that
calls `register_detector`; you name that module on the command line (`--detector_module=MODULE` of
`python -m pkd_jax.preprocess` and `python -m pkd_jax.predict`), and `load_detector_modules` imports it,
in the parent and in every preprocessing worker process (OpenCV objects do not pickle, so each process
creates its own detector by name).
"""

from __future__ import annotations

import importlib
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import cv2.data
import numpy as np

from pkd_jax.data.face_box import Box, Face
from pkd_jax.data.preprocess_config import FACE_ALIGNMENTS, check_detector_name

_TRACK_MIN_SIDE = 30  # Pixels: the smallest face size searched when tracking.


class FaceDetector(Protocol):
    """Finds the face to crop in one frame."""

    def detect(self, frame_rgb: np.ndarray) -> Face | Box | None:
        """Returns the chosen face in `frame_rgb` (uint8 [H, W, 3]): a `Face`, a bare box, or None."""
        ...

    def reset(self) -> None:
        """Forgets any state carried between frames (called before each video)."""
        ...


DetectorFactory = Callable[..., FaceDetector]
_REGISTRY: dict[str, DetectorFactory] = {}


def register_detector(name: str) -> Callable[[DetectorFactory], DetectorFactory]:
    """Class/function decorator registering a detector factory under `name` (letters, digits, `_`, `-`).

    Factories are called with the keywords `detect_width`, `min_face_fraction`, `redetect_every` (see
    `HaarFaceDetector`) and `weights` (a weights file, for detectors that need one) and should accept and
    ignore any they do not use (`**kwargs`).
    """
    check_detector_name(name)

    def wrap(factory: DetectorFactory) -> DetectorFactory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"face detector {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return wrap


def detector_names() -> list[str]:
    """Registered detector names."""
    return sorted(_REGISTRY)


def is_registered(name: object) -> bool:
    """Whether `name` is a registered detector name (any object is accepted, e.g. from a manifest)."""
    return isinstance(name, str) and name in _REGISTRY


def not_registered_message(name: object) -> str:
    """Why `name` cannot be used, and how to register a detector of one's own."""
    return (
        f"face detector {name!r} is not registered (registered: {detector_names()}); pkd_jax never imports "
        "a detector named by a file or config. If it is a detector of your own, pass "
        "--detector_module=MODULE, a plugin module that registers it under that name with "
        "pkd_jax.data.faces.register_detector"
    )


def create_detector(name: str, **options: Any) -> FaceDetector:
    """The detector registered as `name`, built with `options`; never imports anything.

    Raises:
      ValueError: `name` is an import path or not registered.
    """
    check_detector_name(name)
    if not is_registered(name):
        raise ValueError(not_registered_message(name))
    return _REGISTRY[name](**options)


def load_detector_modules(modules: Iterable[str]) -> list[str]:
    """Imports the plugin modules the user named (`--detector_module`), which register their detectors.

    Only for module names given by the user on the command line or in code, never for names read from a
    file. Returns the detector names registered afterwards.

    Raises:
      ValueError: a module name is not a dotted Python name, or the module cannot be imported.
    """
    for module in modules:
        if not all(part.isidentifier() for part in module.split(".")):
            raise ValueError(
                f"--detector_module={module!r}: not a module name (give an importable dotted name such as "
                "'mylab.detectors', not a file path)"
            )
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ValueError(f"--detector_module={module}: cannot import it ({e})") from e
    return detector_names()


@register_detector("haar")
class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade on a downscaled grey frame; keeps the largest face.

    Speed: full-frame detection searches every position and scale, which costs ~10-20 ms per frame. Between
    full detections (every `redetect_every` frames) the detector only searches around the previous face, at
    0.7-1.4 times its size, falling back to a full detection in the same frame when that finds nothing; so
    no face is missed, and a larger face that appears is picked up at the next full detection at the latest.
    Call `reset()` between videos.

    Args:
      detect_width: Frames wider than this are shrunk to it before detection; boxes are mapped back.
      min_face_fraction: Smallest face side accepted, as a fraction of the frame's shorter side.
      redetect_every: Frames between full detections; 1 runs a full detection on every frame.
      scale_factor: Image pyramid step of `detectMultiScale`.
      min_neighbors: Overlapping detections needed to accept a face (higher: fewer false positives).
      cascade: Cascade file; OpenCV's bundled `haarcascade_frontalface_default.xml` by default.
    """

    def __init__(
        self,
        detect_width: int = 320,
        min_face_fraction: float = 0.15,
        redetect_every: int = 10,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        cascade: str | Path | None = None,
        **unused: Any,
    ):
        del unused  # Options meant for other detectors.
        path = Path(cascade or Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml")
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise ValueError(f"{path}: cannot load the Haar cascade")
        self.detect_width = detect_width
        self.min_face_fraction = min_face_fraction
        self.redetect_every = max(1, redetect_every)
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.reset()

    def reset(self) -> None:
        """Forgets the tracked face (a new video starts)."""
        self._previous: Box | None = None  # In detection-image pixels.
        self._since_full = 0

    def _largest(self, grey: np.ndarray, min_side: int, max_side: int = 0) -> Box | None:
        faces = self._cascade.detectMultiScale(
            grey,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_side, min_side),
            maxSize=(max_side, max_side),
        )
        if len(faces) == 0:
            return None
        x, y, w, h = max(faces, key=lambda f: int(f[2]) * int(f[3]))
        return int(x), int(y), int(w), int(h)

    def _track(self, grey: np.ndarray, previous: Box) -> Box | None:
        """The largest face near `previous` and of 0.7-1.4 times its size."""
        x, y, w, h = previous
        side = max(w, h)
        x0, y0 = max(0, x - side // 2), max(0, y - side // 2)
        x1, y1 = min(grey.shape[1], x + w + side // 2), min(grey.shape[0], y + h + side // 2)
        roi = grey[y0:y1, x0:x1]
        # Shrink the search region so the smallest size searched is ~30 px: the cascade's cost grows with
        # the pixel count, and its 24 px window finds faces of that size reliably.
        shrink = min(1.0, _TRACK_MIN_SIDE / (0.7 * side))
        if shrink < 1.0:
            roi = cv2.resize(
                roi,
                (max(1, round(roi.shape[1] * shrink)), max(1, round(roi.shape[0] * shrink))),
                interpolation=cv2.INTER_AREA,
            )
        box = self._largest(roi, max(24, int(0.7 * side * shrink)), int(1.4 * side * shrink) + 1)
        if box is None:
            return None
        bx, by, bw, bh = (round(v / shrink) for v in box)
        return bx + x0, by + y0, bw, bh

    def detect(self, frame_rgb: np.ndarray) -> Box | None:
        height, width = frame_rgb.shape[:2]
        scale = min(1.0, self.detect_width / width)
        grey = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            grey = cv2.resize(
                grey, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA
            )
        box = None
        if self._previous is not None and self._since_full < self.redetect_every - 1:
            box = self._track(grey, self._previous)
            self._since_full += 1
        if box is None:
            box = self._largest(grey, max(1, round(self.min_face_fraction * min(grey.shape))))
            self._since_full = 0
        self._previous = box
        if box is None:
            return None
        x, y, w, h = box
        return (round(x / scale), round(y / scale), round(w / scale), round(h / scale))


@register_detector("mtcnn")
def _mtcnn(**options: Any) -> FaceDetector:
    """MTCNN in JAX (`pkd_jax.detect.mtcnn_detector.MtcnnDetector`), imported only when chosen."""
    from pkd_jax.detect.mtcnn_detector import MtcnnDetector

    return MtcnnDetector(**options)


def as_face(found: Face | Box | None) -> Face | None:
    """A detector's answer as a `Face` (bare boxes from detectors of one's own are accepted)."""
    if found is None or isinstance(found, Face):
        return found
    return Face(box=tuple(int(v) for v in found))  # type: ignore[arg-type]


def detect_many(detector: FaceDetector, frames: Sequence[np.ndarray]) -> list[Face | None]:
    """The face of each of consecutive `frames`, through `detect_batch` where the detector has it."""
    batch = getattr(detector, "detect_batch", None)
    found = batch(frames) if batch is not None else [detector.detect(f) for f in frames]
    return [as_face(f) for f in found]


def square_crop_box(box: Box, margin: float, height: int, width: int) -> Box:
    """The square around `box`, grown by `margin` x its size per side, shifted and shrunk to fit the frame."""
    x, y, w, h = box
    side = min(round(max(w, h) * (1.0 + 2.0 * margin)), height, width)
    side = max(side, 1)
    cx, cy = x + w / 2.0, y + h / 2.0
    # Shift rather than cut: a face at the border keeps its aspect ratio and scale.
    x0 = int(np.clip(round(cx - side / 2.0), 0, width - side))
    y0 = int(np.clip(round(cy - side / 2.0), 0, height - side))
    return (x0, y0, side, side)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes to `size` x `size` (area averaging when shrinking, bilinear when enlarging)."""
    if image.shape[0] == size and image.shape[1] == size:
        return np.ascontiguousarray(image)
    shrink = image.shape[0] > size or image.shape[1] > size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def crop_face(frame_rgb: np.ndarray, box: Box, size: int, margin: float) -> np.ndarray:
    """uint8 [size, size, 3]: the square crop around `box` (see `square_crop_box`), resized."""
    x0, y0, side, _ = square_crop_box(box, margin, *frame_rgb.shape[:2])
    return resize_square(frame_rgb[y0 : y0 + side, x0 : x0 + side], size)


class FaceCropper:
    """Detects and crops the face of each frame, accumulating the time spent detecting.

    Args:
      detector: The face detector.
      size: Side of the output crops in pixels.
      margin: Context kept around the detected box, as a fraction of its size per side (`align="none"`).
      align: "none": the square around the box; "landmarks": the five landmarks warped onto the
        canonical template (the detector must give landmarks; the margin does not apply).
      batch_frames: Frames handed to the detector at once by `crop_frames`.
    """

    def __init__(
        self, detector: FaceDetector, size: int, margin: float, align: str = "none", batch_frames: int = 16
    ):
        if align not in FACE_ALIGNMENTS:
            raise ValueError(f"face_align={align!r}; choose one of {list(FACE_ALIGNMENTS)}")
        self.detector = detector
        self.size = size
        self.margin = margin
        self.align = align
        self.batch_frames = batch_frames
        self.detect_seconds = 0.0

    def reset(self) -> None:
        """Starts a new video (detectors may track faces across frames)."""
        self.detector.reset()

    def crop(self, frame_rgb: np.ndarray, face: Face | None) -> tuple[np.ndarray, bool]:
        """(crop uint8 [size, size, 3], found) of `face` in `frame_rgb`; a black crop when it is None."""
        if face is None:
            return np.zeros((self.size, self.size, 3), np.uint8), False
        if self.align == "none":
            return crop_face(frame_rgb, face.box, self.size, self.margin), True
        if face.landmarks is None:
            raise ValueError(
                f"face_align='landmarks' needs a detector that gives landmarks; "
                f"{type(self.detector).__name__} gives boxes only (use detector 'mtcnn')"
            )
        from pkd_jax.detect.landmark_align import aligned_crop

        return aligned_crop(frame_rgb, face.landmarks, self.size), True

    def __call__(self, frame_rgb: np.ndarray) -> tuple[np.ndarray, bool]:
        """(crop uint8 [size, size, 3], found) of one frame; a black crop when no face is found."""
        start = time.perf_counter()
        face = as_face(self.detector.detect(frame_rgb))
        self.detect_seconds += time.perf_counter() - start
        return self.crop(frame_rgb, face)

    def crop_frames(self, frames: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, bool]]:
        """(crop, found) of each of consecutive frames of one video, detecting `batch_frames` at a time."""
        for chunk in itertools.batched(frames, self.batch_frames):
            start = time.perf_counter()
            faces = detect_many(self.detector, chunk)
            self.detect_seconds += time.perf_counter() - start
            for frame, face in zip(chunk, faces, strict=True):
                yield self.crop(frame, face)
