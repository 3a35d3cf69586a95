"""RECOLA (AVEC 2016) corpus reader; also reads synthetic corpora, which use the same layout.

    recordings_video/<id>.mp4                               the video (.avi/.mkv/.mov also accepted)
    recordings_audio/<id>.wav                               the audio
    ratings_gold_standard/{arousal,valence}/<id>.arff       gold standard, one row per 40 ms, or
    ratings_gold_standard/<id>.csv                          `arousal;valence` rows (used when no ARFF)
    recordings_physio/<id>.csv                              optional: ECG and EDA (`pkd_jax.data.physio`)

Ids `train_k` form the train split and `dev_k` the dev split. `test_k` recordings form the test split when
their gold standard exists (synthetic corpora generated with `n_test`); real RECOLA's test recordings have
no public ratings, so a `test_k` without any rating file is skipped (logged, not a failure), as are ids of
any other form.

With physiological signals on (`PreprocessConfig.physio`), each recording's CSV is read and checked before
the video is decoded, joins the length reconciliation as one more stream, and becomes the per-frame
features of `pkd_jax.data.physio_features`; a bad file fails only its own video.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from pathlib import Path

import numpy as np

from pkd_jax.data import recola_format
from pkd_jax.data.align import AlignedVideo, LabelError, Length, reconcile_lengths
from pkd_jax.data.audio import fit_length, load_wav
from pkd_jax.data.faces import FaceCropper
from pkd_jax.data.physio import PhysioRecording, read_physio
from pkd_jax.data.physio_features import physio_features
from pkd_jax.data.preprocess_config import PreprocessConfig
from pkd_jax.data.video import VideoReader

_LOG = logging.getLogger(__name__)

SPLITS = {"train": "train", "dev": "dev", "test": "test"}  # id prefix -> split
# Splits kept only where ratings exist: RECOLA's test labels are withheld, which is no broken input.
NEEDS_RATINGS = ("test",)
NEEDS_DETECTOR = True
SUPPORTS_PHYSIO = True
PHYSIO_FOLDER = "recordings_physio"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov")
_ID = re.compile(r"([A-Za-z]+)_(\d+)")


@dataclasses.dataclass(frozen=True)
class RecolaJob:
    """Where one recording's files are (or are expected)."""

    video_id: str
    split: str
    video: Path
    audio: Path
    gold: Path  # the ratings_gold_standard folder
    physio: Path  # recordings_physio/<id>.csv, read when physiological signals are on


def _natural_key(video_id: str) -> tuple[str, int, str]:
    m = _ID.fullmatch(video_id)
    return (m.group(1), int(m.group(2)), "") if m else (video_id, -1, video_id)


def discover(src: str | Path) -> list[RecolaJob]:
    """Every train/dev recording that has a video or a rating file under `src`, and every test recording
    that has a rating file: train first, then dev, then test, natural order within a split."""
    root = Path(src)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: corpus folder missing")
    gold = root / "ratings_gold_standard"
    videos = {p.stem: p for p in sorted((root / "recordings_video").glob("*")) if p.suffix in VIDEO_SUFFIXES}
    rated = {p.stem for d in ("arousal", "valence") for p in (gold / d).glob("*.arff")}
    rated |= {p.stem for p in gold.glob("*.csv")}
    jobs, ignored, unlabelled = [], [], []
    for video_id in sorted(set(videos) | rated, key=_natural_key):
        m = _ID.fullmatch(video_id)
        split = SPLITS.get(m.group(1)) if m else None
        if split is None:
            ignored.append(video_id)
            continue
        if split in NEEDS_RATINGS and video_id not in rated:
            unlabelled.append(video_id)
            continue
        video = videos.get(video_id, root / "recordings_video" / f"{video_id}.mp4")
        audio = root / "recordings_audio" / f"{video_id}.wav"
        jobs.append(RecolaJob(video_id, split, video, audio, gold, root / PHYSIO_FOLDER / f"{video_id}.csv"))
    jobs.sort(key=lambda j: (list(SPLITS.values()).index(j.split), _natural_key(j.video_id)))
    if ignored:
        _LOG.info("%s: ignoring %d recordings outside train/dev/test: %s", root, len(ignored), ignored[:5])
    if unlabelled:
        _LOG.info(
            "%s: skipping %d test recordings without gold standard (RECOLA's are not public): %s",
            root, len(unlabelled), unlabelled[:5],
        )  # fmt: skip
    if not jobs:
        raise FileNotFoundError(
            f"{root}: no train_*/dev_*/labelled test_* recordings "
            "(looked in recordings_video/ and ratings_gold_standard/)"
        )
    return jobs


def has_physio(src: str | Path) -> bool:
    """Whether the corpus at `src` has physiological recordings (its `recordings_physio/` folder)."""
    return (Path(src) / PHYSIO_FOLDER).is_dir()


def _read_arff_dimension(path: Path, fps: float) -> np.ndarray:
    if not path.is_file():
        raise LabelError(f"{path}: rating file missing")
    times, values = recola_format.read_arff_gold(path)
    # Rows must be one per video frame, else label t would not describe frame t.
    if len(times) > 1 and abs(float(np.median(np.diff(times))) - 1.0 / fps) > 0.1 / fps:
        raise LabelError(
            f"{path}: rows are not {1000 / fps:g} ms apart (median step {np.median(np.diff(times))} s)"
        )
    return values


def read_labels(gold: Path, video_id: str, fps: float) -> tuple[np.ndarray, list[Path]]:
    """float32 [T, 2] (valence, arousal) gold standard of `video_id`, and the files read.

    ARFF files are preferred; the CSV form is used when neither ARFF file exists.

    Raises:
      LabelError: naming the file, when it is missing, malformed or holds NaN, or when the dimensions differ
        in length.
    """
    arff = {d: gold / d / f"{video_id}.arff" for d in ("valence", "arousal")}
    csv = gold / f"{video_id}.csv"
    use_arff = any(p.is_file() for p in arff.values())
    if not use_arff and not csv.is_file():
        raise LabelError(f"{arff['arousal']}, {arff['valence']} or {csv}: no rating file of {video_id}")
    try:
        if not use_arff:
            table = recola_format.read_csv_gold(csv)  # columns (arousal, valence)
            return table[:, ::-1].astype(np.float32), [csv]
        valence, arousal = (_read_arff_dimension(arff[d], fps) for d in ("valence", "arousal"))
    except LabelError:
        raise
    except ValueError as e:  # recola_format's messages already name the file.
        raise LabelError(str(e)) from e
    if len(valence) != len(arousal):
        raise LabelError(
            f"{arff['valence']} ({len(valence)} rows) and {arff['arousal']} ({len(arousal)} rows) differ in length"
        )
    return np.stack([valence, arousal], axis=1).astype(np.float32), list(arff.values())


def _read_physio(job: RecolaJob, config: PreprocessConfig, num_frames: int) -> PhysioRecording | None:
    """The recording's checked physiological signals, or None when they are off ("auto": the corpus has
    no `recordings_physio/`). Its length is checked against the ratings' `num_frames` with the tolerance
    of the other streams."""
    if not (config.physio == "yes" or (config.physio == "auto" and job.physio.parent.is_dir())):
        return None
    allowed = max(config.length_tolerance_fraction * num_frames, config.length_tolerance_frames)
    return read_physio(
        job.physio,
        sample_rate=config.physio_sample_rate,
        num_frames=num_frames,
        fps=config.fps,
        max_gap_s=config.physio_max_gap_s,
        tolerance_s=allowed / config.fps,
    )


def extract(job: RecolaJob, config: PreprocessConfig, cropper: FaceCropper) -> AlignedVideo:
    """Decodes, detects, reads and aligns one recording.

    Cheap checks (ratings, audio, physiological signals) run before decoding the video so broken inputs
    fail fast.
    """
    start = time.perf_counter()
    labels, label_files = read_labels(job.gold, job.video_id, config.fps)
    audio = load_wav(job.audio, config.sample_rate)
    physio = _read_physio(job, config, len(labels))
    before = cropper.detect_seconds
    cropper.reset()
    reader = VideoReader(job.video, config.fps)
    crops, found = [], []
    for crop, ok in cropper.crop_frames(reader):
        crops.append(crop)
        found.append(ok)
    samples_per_frame = config.sample_rate // config.fps
    lengths = {
        "video": Length(len(crops), job.video),
        "labels": Length(len(labels), ", ".join(str(p) for p in label_files)),
        "audio": Length(len(audio) / samples_per_frame, job.audio),
    }
    if physio is not None:
        lengths["physio"] = Length(physio.duration_s * config.fps, job.physio)
    n, warnings = reconcile_lengths(
        job.video_id,
        lengths,
        tolerance_fraction=config.length_tolerance_fraction,
        tolerance_frames=config.length_tolerance_frames,
    )
    sources = {"video": str(job.video), "audio": str(job.audio), "labels": [str(p) for p in label_files]}
    timing = {"read_seconds": time.perf_counter() - start, "face_seconds": cropper.detect_seconds - before}
    features = None
    if physio is not None:
        tic = time.perf_counter()
        features = physio_features(physio, n, config.fps)
        timing["physio_seconds"] = time.perf_counter() - tic
        sources["physio"] = str(job.physio)
        warnings = [*physio.warnings, *warnings]
    extra = {
        "sources": sources,
        "lengths": {name: length.frames for name, length in lengths.items()},
        "source_fps": reader.source_fps,
        "source_frames": reader.source_frames,
        "timing": timing,
    }
    return AlignedVideo(
        frames=np.stack(crops[:n]),
        face_found=np.asarray(found[:n], bool),
        labels=labels[:n],
        label_mask=np.ones(n, bool),
        audio=fit_length(audio, n * samples_per_frame),
        warnings=warnings,
        extra=extra,
        physio=features,
    )
