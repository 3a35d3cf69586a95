"""The feature cache: the contract between preprocessing and the input pipeline.

Layout of a cache directory:

    manifest.json                  versioned index: config, per-video status, audio z-score statistics
    videos/<id>/meta.json          per-video facts; its presence marks the video finished
    videos/<id>/frames.npy         uint8 [T, S, S, 3] face crops (black where no face was found)
    videos/<id>/face_found.npy     bool [T]
    videos/<id>/logmel.npy         float16 [N, n_mels] log-mel spectrogram of the whole recording,
                                   N = k * T exactly with k = sample_rate / (fps * hop) mel frames per
                                   video frame; mel frame j covers samples [j*hop, (j+1)*hop), so video
                                   frame t owns mel frames [k*t, k*t + k)
    videos/<id>/labels.npy         float32 [T, 2] (valence, arousal)
    videos/<id>/label_mask.npy     bool [T], False where a label is invalid
    videos/<id>/physio.npy         float32 [T, 4] physiological features per frame (only in a cache built
                                   with physio: manifest config "physio" is "yes"; docs/data.md), raw
                                   units, columns `physio_features.PHYSIO_FEATURES`: heart_rate (bpm),
                                   hrv_rmssd (ms), eda_tonic (uS), eda_phasic (uS)

Arrays are plain `.npy` files so readers memory-map them. A video is written into a hidden temporary
directory and renamed into place, so a partial write never looks finished and preprocessing resumes by
skipping the videos that have a `meta.json`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pkd_jax.cached import write_text_atomic

CACHE_VERSION = 1
ARRAYS = ("frames", "face_found", "logmel", "labels", "label_mask")
OPTIONAL_ARRAYS = ("physio",)  # written when present; a cache built with physio has it for every video
TARGETS = ("valence", "arousal")


class CacheError(ValueError):
    """A cache that is missing, of another version, or inconsistent; the message names the file."""


def _write_json(path: Path, obj: Any, *, sort_keys: bool = True) -> None:
    # Write then rename: readers never see half a file.
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=sort_keys))


@dataclasses.dataclass
class VideoRecord:
    """What the manifest says about one video."""

    video_id: str
    split: str
    status: str  # "ok" or "failed"
    num_frames: int = 0
    face_found_fraction: float = 0.0
    reason: str = ""
    warnings: list[str] = dataclasses.field(default_factory=list)


class CacheWriter:
    """Writes videos into a cache directory, one atomic directory per video, then the manifest."""

    def __init__(self, root: str | os.PathLike, *, dataset: str, config: Mapping[str, Any]):
        self.root = Path(root)
        self.dataset = dataset
        self.config = dict(config)
        (self.root / "videos").mkdir(parents=True, exist_ok=True)
        self.failures: dict[str, VideoRecord] = {}

    def video_dir(self, video_id: str) -> Path:
        return self.root / "videos" / video_id

    def is_done(self, video_id: str) -> bool:
        """True when the video was finished by this or an earlier run (resumability)."""
        return (self.video_dir(video_id) / "meta.json").is_file()

    def write_video(
        self, record: VideoRecord, arrays: Mapping[str, np.ndarray], extra: Mapping[str, Any] | None = None
    ) -> None:
        """Stores one finished video atomically; `arrays` holds every name in `ARRAYS`."""
        missing = set(ARRAYS) - set(arrays)
        if missing:
            raise CacheError(f"video {record.video_id}: arrays {sorted(missing)} missing")
        tmp = Path(tempfile.mkdtemp(prefix=f".{record.video_id}.", dir=self.root / "videos"))
        try:
            for name in (*ARRAYS, *(n for n in OPTIONAL_ARRAYS if n in arrays)):
                np.save(tmp / f"{name}.npy", arrays[name])
            meta = dataclasses.asdict(record) | dict(extra or {})
            _write_json(tmp / "meta.json", meta)
            final = self.video_dir(record.video_id)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.failures.pop(record.video_id, None)

    def record_failure(self, video_id: str, split: str, reason: str) -> None:
        """Notes a video that could not be processed; it is listed in the manifest with its reason."""
        self.failures[video_id] = VideoRecord(video_id, split, "failed", reason=reason)

    def finalize(self, expected: Iterable[tuple[str, str]]) -> dict[str, Any]:
        """Computes the training-split audio statistics and writes `manifest.json`.

        Args:
          expected: (video_id, split) of every video the corpus has, finished or not.
        """
        videos: dict[str, Any] = {}
        for video_id, split in expected:
            if self.is_done(video_id):
                videos[video_id] = json.loads((self.video_dir(video_id) / "meta.json").read_text())
            elif video_id in self.failures:
                videos[video_id] = dataclasses.asdict(self.failures[video_id])
            else:
                videos[video_id] = dataclasses.asdict(
                    VideoRecord(video_id, split, "failed", reason="not processed")
                )
        train = [v for v, m in videos.items() if m["split"] == "train" and m["status"] == "ok"]
        manifest = {
            "version": CACHE_VERSION,
            "dataset": self.dataset,
            "config": self.config,
            "audio_stats": self._audio_stats(train),
            "videos": videos,
        }
        _write_json(self.root / "manifest.json", manifest, sort_keys=False)  # videos in corpus order
        return manifest

    def _audio_stats(self, train_ids: list[str]) -> dict[str, list[float]] | None:
        """Per-mel-bin mean and std over every training-split spectrogram frame (float64 sums)."""
        total: np.ndarray | None = None
        sq: np.ndarray | None = None
        n = 0
        for video_id in train_ids:
            logmel = np.load(self.video_dir(video_id) / "logmel.npy", mmap_mode="r").astype(np.float64)
            total = logmel.sum(0) if total is None else total + logmel.sum(0)
            sq = (logmel**2).sum(0) if sq is None else sq + (logmel**2).sum(0)
            n += logmel.shape[0]
        if not n:
            return None
        assert total is not None and sq is not None  # n > 0: at least one video was summed
        mean = total / n
        std = np.sqrt(np.maximum(sq / n - mean**2, 1e-12))
        return {"mean": mean.tolist(), "std": std.tolist()}


@dataclasses.dataclass(frozen=True)
class CachedVideo:
    """Memory-mapped arrays of one video (see the module docstring for shapes)."""

    video_id: str
    split: str
    frames: np.ndarray
    face_found: np.ndarray
    logmel: np.ndarray
    labels: np.ndarray
    label_mask: np.ndarray
    physio: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


class Cache:
    """Read side of the cache: validates the manifest and memory-maps videos on demand."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        path = self.root / "manifest.json"
        if not path.is_file():
            raise CacheError(
                f"{path}: no feature cache here; "
                f"run `python -m pkd_jax.preprocess --out={self.root} ...` first"
            )
        try:
            self.manifest = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise CacheError(f"{path}: not valid JSON ({e})") from e
        version = self.manifest.get("version")
        if version != CACHE_VERSION:
            raise CacheError(
                f"{path}: cache version {version}, this pkd_jax reads version {CACHE_VERSION}; "
                "preprocess again into a new directory"
            )
        self._open: dict[str, CachedVideo] = {}

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest["config"]

    @property
    def has_physio(self) -> bool:
        """Whether the cache was built with physiological recordings (every video has `physio.npy`)."""
        return self.config.get("physio") in ("yes", True)

    def ids(self, split: str | None = None, *, ok_only: bool = True) -> list[str]:
        """Video ids of `split` (all splits when None), in the manifest's order."""
        return [
            v
            for v, m in self.manifest["videos"].items()
            if (split is None or m["split"] == split) and (m["status"] == "ok" or not ok_only)
        ]

    def failures(self) -> dict[str, str]:
        """Videos that preprocessing could not finish, with the reason."""
        return {v: m["reason"] for v, m in self.manifest["videos"].items() if m["status"] != "ok"}

    def audio_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Training-split log-mel mean and std per mel bin, float32 [n_mels] each."""
        stats = self.manifest.get("audio_stats")
        if not stats:
            raise CacheError(f"{self.root / 'manifest.json'}: no audio statistics (no training video?)")
        return np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)

    def video(self, video_id: str) -> CachedVideo:
        """The memory-mapped arrays of `video_id` (opened once, then reused)."""
        if video_id not in self._open:
            meta = self.manifest["videos"].get(video_id)
            if meta is None or meta["status"] != "ok":
                raise CacheError(f"{self.root}: video {video_id!r} is not in the cache or failed")
            folder = self.root / "videos" / video_id
            try:
                arrays = {n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in ARRAYS}
                for name in OPTIONAL_ARRAYS:
                    if (folder / f"{name}.npy").is_file():
                        arrays[name] = np.load(folder / f"{name}.npy", mmap_mode="r")
            except (OSError, ValueError) as e:
                raise CacheError(f"{folder}: unreadable cached arrays ({e})") from e
            self._open[video_id] = CachedVideo(video_id, meta["split"], **arrays)
        return self._open[video_id]
