"""Aff-Wild2 (ABAW valence-arousal challenge) corpus reader.

    VA_Estimation_Challenge/Train_Set/<video>.txt       `valence,arousal` header, one row per video frame,
    VA_Estimation_Challenge/Validation_Set/<video>.txt  -5 marks an invalid frame (this folder may also sit
                                                        one level deeper, as in "Third ABAW Annotations/")
    cropped_aligned/<video>/00001.jpg ...               the challenge's aligned face crops, 1-based
    videos/**/<video>.mp4|.avi                          the recording, read for its audio track only

Two annotated people in one recording are `<name>_left` and `<name>_right` and share `videos/<name>.*`.
Train_Set is the train split and Validation_Set the dev split. The provided crops are used as they are
(no detection); a missing or unreadable crop gives a black frame with face_found False.

Aff-Wild2 rows are per *source* frame (often 30 fps): lengths are reconciled on that timeline, then
every output frame k takes the source frame nearest to k / fps, as `video.select_nearest` does.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import cv2
import numpy as np

from pkd_jax.data.align import AlignedVideo, LabelError, Length, reconcile_lengths
from pkd_jax.data.audio import AudioError, fit_length, load_container_audio
from pkd_jax.data.faces import FaceCropper, resize_square
from pkd_jax.data.preprocess_config import PreprocessConfig
from pkd_jax.data.video import probe_video

SPLITS = {"Train_Set": "train", "Validation_Set": "dev"}
NEEDS_DETECTOR = False
SUPPORTS_PHYSIO = False  # Aff-Wild2 records no physiological signals
VIDEO_SUFFIXES = (".mp4", ".avi")
INVALID = -5.0
_PERSON_SUFFIXES = ("_left", "_right")


@dataclasses.dataclass(frozen=True)
class AffWild2Job:
    """Where one annotated video's files are (or are expected)."""

    video_id: str
    split: str
    labels: Path
    crops: Path  # cropped_aligned/<video_id>
    video: Path | None  # None when no recording matches
    expected_video: str  # for the error message when `video` is None


def recording_name(video_id: str) -> str:
    """The recording a video id belongs to: `_left`/`_right` stripped."""
    for suffix in _PERSON_SUFFIXES:
        if video_id.endswith(suffix):
            return video_id[: -len(suffix)]
    return video_id


def discover(src: str | Path) -> list[AffWild2Job]:
    """Every annotated train/dev video under `src`, train first, in name order."""
    root = Path(src)
    annotations = root / "VA_Estimation_Challenge"
    if not annotations.is_dir():
        # The challenge ships it inside a release folder, e.g. "Third ABAW Annotations/".
        nested = sorted(root.glob("*/VA_Estimation_Challenge"))
        if not nested:
            raise FileNotFoundError(f"{annotations}: Aff-Wild2 annotation folder missing")
        annotations = nested[0]
    recordings: dict[str, Path] = {}
    for path in sorted((root / "videos").rglob("*")):
        if path.suffix.lower() in VIDEO_SUFFIXES:
            recordings.setdefault(path.stem, path)
    jobs = []
    for folder, split in SPLITS.items():
        for labels in sorted((annotations / folder).glob("*.txt")):
            video_id = labels.stem
            # A recording named exactly like the id wins over the shared `_left`/`_right` one.
            name = video_id if video_id in recordings else recording_name(video_id)
            expected = f"{root / 'videos' / name}.mp4|.avi"
            jobs.append(
                AffWild2Job(
                    video_id,
                    split,
                    labels,
                    root / "cropped_aligned" / video_id,
                    recordings.get(name),
                    expected,
                )
            )
    if not jobs:
        raise FileNotFoundError(f"{annotations}: no Train_Set/Validation_Set/*.txt annotation files")
    return jobs


def read_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [T, 2] (valence, arousal), bool [T] valid) from an annotation file; invalid rows hold 0.

    Raises:
      LabelError: naming the file (and line), for a missing file or header, a malformed row, a NaN, or a
        value outside [-1, 1] other than -5.
    """
    if not path.is_file():
        raise LabelError(f"{path}: annotation file missing")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or lines[0].strip().replace(" ", "").lower() != "valence,arousal":
        raise LabelError(f"{path}: expected the header 'valence,arousal'")
    rows = []
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split(",")
        try:
            values = [float(f) for f in fields]
        except ValueError:
            values = []
        if len(values) != 2:
            raise LabelError(f"{path}:{line_no}: expected 'valence,arousal', got {line!r}")
        if not all(math.isfinite(v) and (-1.0 <= v <= 1.0 or v == INVALID) for v in values):
            raise LabelError(f"{path}:{line_no}: values must be in [-1, 1] or {INVALID:g}, got {line!r}")
        rows.append(values)
    if not rows:
        raise LabelError(f"{path}: no annotation rows")
    labels = np.asarray(rows, np.float32)
    valid = ~(labels == INVALID).any(axis=1)
    labels[~valid] = 0.0  # Masked anyway; 0 keeps an accidental use harmless.
    return labels, valid


def _read_crop(path: Path, size: int) -> np.ndarray | None:
    if not path.is_file():  # Checked first: OpenCV would log a warning per missing frame.
        return None
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return None
    return resize_square(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), size)


def extract(job: AffWild2Job, config: PreprocessConfig, cropper: FaceCropper | None = None) -> AlignedVideo:
    """Reads and aligns one annotated video (`cropper` is unused: the crops are provided)."""
    del cropper
    start = time.perf_counter()
    labels, valid = read_labels(job.labels)
    if job.video is None:
        raise AudioError(f"{job.expected_video}: recording missing (audio source of {job.video_id})")
    info = probe_video(job.video)
    audio = load_container_audio(job.video, config.sample_rate)
    lengths = {
        "labels": Length(len(labels), job.labels),
        "audio": Length(len(audio) / config.sample_rate * info.fps, job.video),
    }
    if info.num_frames:  # The container's frame count; some files do not state it.
        lengths["video"] = Length(info.num_frames, job.video)
    n_source, warnings = reconcile_lengths(
        job.video_id,
        lengths,
        tolerance_fraction=config.length_tolerance_fraction,
        tolerance_frames=config.length_tolerance_frames,
    )
    n = math.floor(n_source * config.fps / info.fps + 0.5)
    index = np.minimum(np.floor(np.arange(n) * info.fps / config.fps + 0.5).astype(np.int64), n_source - 1)
    frames = np.zeros((n, config.face_size, config.face_size, 3), np.uint8)
    found = np.zeros(n, bool)
    unreadable = 0
    for k, i in enumerate(index):
        path = job.crops / f"{i + 1:05d}.jpg"
        crop = _read_crop(path, config.face_size)
        if crop is not None:
            frames[k], found[k] = crop, True
        elif path.exists():
            unreadable += 1
    if unreadable:
        warnings.append(f"{job.video_id}: {unreadable} unreadable crops in {job.crops} (treated as no face)")
    samples_per_frame = config.sample_rate // config.fps
    extra = {
        "sources": {"video": str(job.video), "labels": str(job.labels), "crops": str(job.crops)},
        "lengths": {name: length.frames for name, length in lengths.items()},
        "source_fps": info.fps,
        "source_frames": n_source,
        "timing": {"read_seconds": time.perf_counter() - start, "face_seconds": 0.0},
    }
    return AlignedVideo(
        frames=frames,
        face_found=found,
        labels=labels[index],
        label_mask=valid[index],
        audio=fit_length(audio, n * samples_per_frame),
        warnings=warnings,
        extra=extra,
    )
