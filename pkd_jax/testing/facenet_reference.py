"""facenet-pytorch, the MTCNN reference of the parity tests: fetched once from PyPI into the environment.

`facenet_wheel()` downloads the pinned wheel with pip (`pip download --no-deps`, the registry package the
weights ship in) into `<sys.prefix>/pkd_jax_downloads/` (the project's `.venv`) unless it is there,
checks its SHA-256, and returns its path; `facenet_module()` unpacks it next to the wheel and imports
`facenet_pytorch` from there (it needs torch and torchvision, the `dev` extra). Nothing is skipped: a
machine that cannot reach PyPI gets a RuntimeError saying so.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np

FACENET_VERSION = "2.6.0"
FACENET_WHEEL = f"facenet_pytorch-{FACENET_VERSION}-py3-none-any.whl"
FACENET_SHA256 = "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca"


def download_dir() -> Path:
    """Where fetched test packages live: inside the active environment (`.venv`)."""
    return Path(sys.prefix) / "pkd_jax_downloads"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def facenet_wheel() -> Path:
    """The facenet-pytorch wheel, fetched through pip on first use; its hash is checked every time.

    Raises:
      RuntimeError: pip could not fetch it, or the file's hash is not the pinned one.
    """
    target = download_dir() / FACENET_WHEEL
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
            command += ["--dest", tmp, f"facenet-pytorch=={FACENET_VERSION}"]
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
            fetched = Path(tmp) / FACENET_WHEEL
            if done.returncode or not fetched.is_file():
                raise RuntimeError(
                    f"could not fetch facenet-pytorch=={FACENET_VERSION} from PyPI (the MTCNN reference and "
                    f"weights): {' '.join(command)} said:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
                )
            os.replace(fetched, target)  # atomic: parallel test workers never see half a file
    if (digest := _sha256(target)) != FACENET_SHA256:
        raise RuntimeError(f"{target}: SHA-256 {digest}, expected {FACENET_SHA256}; delete it to refetch")
    return target


def facenet_module() -> ModuleType:
    """`facenet_pytorch`, imported from the unpacked wheel."""
    wheel = facenet_wheel()
    unpacked = wheel.with_suffix("")
    if not (unpacked / "facenet_pytorch" / "__init__.py").is_file():
        tmp = tempfile.mkdtemp(dir=wheel.parent)
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(tmp)
        try:
            os.replace(tmp, unpacked)
        except OSError:  # another test worker unpacked it first
            shutil.rmtree(tmp, ignore_errors=True)
    if str(unpacked) not in sys.path:
        sys.path.insert(0, str(unpacked))
    return importlib.import_module("facenet_pytorch")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def assert_same_faces(name: str, boxes: np.ndarray, landmarks: np.ndarray, ref_boxes, ref_landmarks) -> int:
    """Asserts one frame's faces (boxes [K, 4] x1 y1 x2 y2, landmarks [K, 5, 2]) are the reference's:
    as many, each reference face matched with IoU >= 0.9 and landmarks within 2 px. Returns the count.

    `ref_boxes` / `ref_landmarks` are `facenet_pytorch.MTCNN.detect(..., landmarks=True)`'s (None: none).
    """
    want = np.zeros((0, 4)) if ref_boxes is None else np.asarray(ref_boxes, np.float64)
    want_points = np.zeros((0, 5, 2)) if ref_landmarks is None else np.asarray(ref_landmarks, np.float64)
    assert len(boxes) == len(want), f"{name}: {len(boxes)} faces, the reference finds {len(want)}"
    for box, points in zip(want, want_points, strict=True):
        ious = [_iou(box, b) for b in boxes]
        best = int(np.argmax(ious))
        assert ious[best] >= 0.9, f"{name}: IoU {ious[best]:.3f} with the reference's {box}"
        error = float(np.abs(landmarks[best] - points).max())
        assert error <= 2.0, f"{name}: landmarks {error:.2f} px from the reference's"
    return len(want)
