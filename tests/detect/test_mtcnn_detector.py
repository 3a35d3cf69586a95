"""The `mtcnn` face detector: tracking, batching, alignment, weights files and settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from pkd_jax.data.faces import Face, FaceCropper, create_detector
from pkd_jax.data.preprocess_config import PreprocessConfig
from pkd_jax.detect.landmark_align import TEMPLATE, aligned_crop, similarity_transform
from pkd_jax.testing.facenet_reference import facenet_wheel
from pkd_jax.weights.files import save_npz
from pkd_jax.weights.mtcnn import import_mtcnn, load_mtcnn_weights

# Every test here detects on 128 x 128 frames, 16 (or 1) at a time, with the default 15% smallest face, as
# tests/data/test_mtcnn_corpus.py does on the tiny corpus: the compiled programs are shared through the
# suite's compilation cache instead of being compiled once per test.
SIDE, BATCH = 128, 16


def _moving_face(count: int = 24) -> list[np.ndarray]:
    """A 128 px window of the astronaut photo moving 2 px a frame, with three face-less frames in the middle."""
    photo = cv2.resize(skimage.data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    frames = [np.ascontiguousarray(photo[0:SIDE, 40 + 2 * i : 40 + 2 * i + SIDE]) for i in range(count)]
    for i in (9, 10, 11):
        if i < count:
            frames[i] = np.full_like(frames[i], 60)
    return frames


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    w = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return w * h / (a[2] * a[3] + b[2] * b[3] - w * h)


def test_tracking_finds_what_full_detection_finds_with_fewer_full_detections(mtcnn_weights: Path):
    frames = _moving_face()
    found = {}
    for every in (1, 6):
        detector = create_detector("mtcnn", weights=str(mtcnn_weights), redetect_every=every, batch_frames=4)
        faces = [
            f for start in range(0, len(frames), 4) for f in detector.detect_batch(frames[start : start + 4])
        ]
        found[every] = (faces, detector.full_detections)
    (full, full_count), (tracked, tracked_count) = found[1], found[6]
    assert full_count == len(frames) and tracked_count < len(frames) / 2
    for i, (a, b) in enumerate(zip(full, tracked, strict=True)):
        assert (a is None) == (b is None) == (i in (9, 10, 11)), i
        if a is not None and b is not None:
            # O-Net from the key frame's box, with the face moved up to 10 px since (a 55 px face moving
            # 50 px/s): the same face, within a few pixels.
            assert _iou(a.box, b.box) >= 0.75, (i, a.box, b.box)
            assert np.abs(a.landmarks - b.landmarks).max() < 5.0
    # The face moves left in the window, 2 px a frame: each frame's answer is its own.
    assert full[0].box[0] - full[20].box[0] in range(34, 47)


def test_one_frame_at_a_time_equals_a_batch(mtcnn_weights: Path):
    frames = _moving_face(8)
    batched = create_detector("mtcnn", weights=str(mtcnn_weights), redetect_every=1, batch_frames=BATCH)
    batched = batched.detect_batch(frames)
    single = create_detector("mtcnn", weights=str(mtcnn_weights), redetect_every=1)
    for frame, face in zip(frames, batched, strict=True):
        one = single.detect(frame)
        assert isinstance(one, Face) and face is not None and one.box == face.box


def test_aligned_crops_put_the_landmarks_on_the_template(mtcnn_weights: Path):
    detector = create_detector("mtcnn", weights=str(mtcnn_weights), redetect_every=1)
    frame = _moving_face(1)[0]
    rotated = cv2.warpAffine(frame, cv2.getRotationMatrix2D((64, 60), 20, 1.0), (SIDE, SIDE))
    cropper = FaceCropper(detector, 112, 0.2, align="landmarks")
    for image in (frame, rotated):
        face = detector.detect(image)
        assert face is not None and face.landmarks is not None
        matrix = similarity_transform(face.landmarks, TEMPLATE)
        mapped = face.landmarks @ matrix[:, :2].T + matrix[:, 2]
        assert np.abs(mapped - TEMPLATE).max() < 6.0  # a real face fits the template closely
        ((crop, ok),) = cropper.crop_frames([image])
        again = detector.detect(cv2.resize(crop, (SIDE, SIDE), interpolation=cv2.INTER_LINEAR))
        assert ok and again is not None and again.landmarks is not None
        # Re-detected on the (enlarged) aligned crop, the landmarks are where the template puts them
        # (a wrong rotation, mirror or scale would move them by tens of pixels).
        error = np.abs(again.landmarks * (112 / SIDE) - TEMPLATE)
        assert error[:3].max() < 5.0 and error.max() < 12.0, error  # eyes and nose; mouths vary more


def test_similarity_transform_recovers_a_known_one():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.4, 1.7, np.array([12.0, -5.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = scale * points @ rotation.T + shift
    matrix = similarity_transform(points, moved)
    np.testing.assert_allclose(matrix, np.concatenate([scale * rotation, shift[:, None]], 1), atol=1e-9)
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), moved)
    with pytest.raises(ValueError, match="finite"):
        similarity_transform(np.full((5, 2), np.nan), moved)
    square = aligned_crop(np.zeros((50, 50, 3), np.uint8), TEMPLATE / 3, 64)
    assert square.shape == (64, 64, 3) and square.dtype == np.uint8


def test_settings_errors_are_clear(tmp_path: Path, mtcnn_weights: Path):
    with pytest.raises(ValueError, match="needs detector_weights"):
        PreprocessConfig(detector="mtcnn")
    with pytest.raises(ValueError, match="'haar' detector does not give"):
        PreprocessConfig(face_align="landmarks")
    with pytest.raises(ValueError, match="face_align='tight'"):
        PreprocessConfig(face_align="tight")
    with pytest.raises(ValueError, match="needs its weights"):
        create_detector("mtcnn")
    missing = tmp_path / "nowhere.npz"
    with pytest.raises(FileNotFoundError, match=f"{missing}.*weights import --arch=mtcnn"):
        create_detector("mtcnn", weights=str(missing))
    # A file missing a network, or with a wrong shape, is refused naming the file and the tensor.
    tree = load_mtcnn_weights(mtcnn_weights)
    del tree["onet"]
    save_npz(tmp_path / "two.npz", tree)
    with pytest.raises(ValueError, match=r"two.npz does not hold .*missing onet/params/conv1/kernel"):
        load_mtcnn_weights(tmp_path / "two.npz")
    tree = load_mtcnn_weights(mtcnn_weights)
    tree["pnet"]["params"]["conv1"]["bias"] = np.zeros(11, np.float32)
    save_npz(tmp_path / "shape.npz", tree)
    with pytest.raises(ValueError, match=r"pnet/params/conv1/bias has shape \(11,\), expected \(10,\)"):
        load_mtcnn_weights(tmp_path / "shape.npz")
    haar = FaceCropper(create_detector("haar"), 48, 0.2, align="landmarks")
    with pytest.raises(ValueError, match="gives boxes only"):
        haar.crop(np.zeros((64, 64, 3), np.uint8), Face(box=(1, 1, 30, 30)))


def test_import_command_converts_the_wheel_and_refuses_other_files(tmp_path: Path, mtcnn_weights: Path):
    out = tmp_path / "mtcnn.npz"
    command = [sys.executable, "-m", "pkd_jax.weights", "import", "--arch=mtcnn", f"--out={out}"]
    done = subprocess.run([*command, f"--src={facenet_wheel()}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "50 tensors" in done.stdout and "--detector_weights=" in done.stdout
    for name, tree in load_mtcnn_weights(out).items():
        for layer, leaves in tree["params"].items():
            for leaf, value in leaves.items():
                np.testing.assert_array_equal(
                    value, load_mtcnn_weights(mtcnn_weights)[name]["params"][layer][leaf]
                )
    bogus = tmp_path / "bogus.whl"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=f"{bogus}: not a readable wheel"):
        import_mtcnn(bogus, tmp_path / "never.npz")
    with pytest.raises(ValueError, match=r"no pnet\.pt in it"):
        import_mtcnn(tmp_path, tmp_path / "never.npz")  # a folder without the .pt files
    assert not (tmp_path / "never.npz").exists()
