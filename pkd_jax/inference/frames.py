"""Inputs of inference, cut exactly as the training pipeline cuts them: face crops chunk by chunk, and
per-frame log-mel windows for a teacher. Students need no audio: audio libraries are imported only when a
teacher's `AudioWindows` is built.

Inputs are checked as preprocessing checks them: `check_video_file` refuses a missing path, a directory
and a still image before decoding, and `check_audio_length` refuses a teacher's audio whose length differs
from the video's by more than preprocessing's tolerance (`align.reconcile_lengths`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import av
import numpy as np

from pkd_jax.data.align import Length, LengthMismatchError, reconcile_lengths
from pkd_jax.data.cache import Cache, CachedVideo
from pkd_jax.data.faces import FaceCropper
from pkd_jax.data.pipeline import MISSING_FACE_POLICIES, FrameReader, PipelineConfig
from pkd_jax.data.preprocess_config import PreprocessConfig
from pkd_jax.data.video import VideoReader

# Still images, refused by name before anything is decoded (FFmpeg would read one as a 1-frame video).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


class PredictError(ValueError):
    """A video that cannot be predicted (unreadable, no face at all, bad audio); names the file."""


def check_video_file(path: str | Path) -> None:
    """Refuses what is not a video file, before any decoding.

    The rule: a path that does not exist, a directory, or a still image, i.e. a file named like one
    (`IMAGE_SUFFIXES`, any case) or one FFmpeg opens with a single-image demuxer (`png_pipe`, `image2`,
    ...: an image under a video's name). A file that is none of these is left to the video reader.

    Raises:
      PredictError: naming the path and which of the three it is.
    """
    path = Path(path)
    if path.is_dir():
        raise PredictError(f"{path}: is a directory, not a video file")
    if not path.exists():
        raise PredictError(f"{path}: does not exist")
    if path.suffix.lower() in IMAGE_SUFFIXES or _image_demuxer(path):
        raise PredictError(f"{path}: holds a single image, not a video")


def _image_demuxer(path: Path) -> bool:
    """Whether FFmpeg reads `path` as a still image; False when it cannot open it at all (the video
    reader then reports why)."""
    try:
        with av.open(str(path)) as container:
            name = container.format.name
    except (av.FFmpegError, OSError, UnicodeDecodeError):
        return False
    return name.endswith("_pipe") or name in ("image2", "image2pipe")


def face_chunks(
    path: str | Path, cropper: FaceCropper, *, fps: float, chunk_frames: int, missing_face: str
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(crops uint8 [n, S, S, 3], found bool [n]) of consecutive frames, n = chunk_frames except last.

    The missing-face policy is applied as the training pipeline applies it to the cache: "retain"
    repeats the last detected face (black before the first one), "black" leaves black crops; the last
    face carries over chunk boundaries.

    Raises:
      VideoError: naming the file, when it cannot be opened or decoded.
    """
    if missing_face not in MISSING_FACE_POLICIES:
        raise ValueError(f"missing_face={missing_face!r}; choose one of {list(MISSING_FACE_POLICIES)}")
    cropper.reset()
    size = cropper.size
    crops = np.zeros((chunk_frames, size, size, 3), np.uint8)
    found = np.zeros(chunk_frames, bool)
    last_face: np.ndarray | None = None
    n = 0
    for crop, ok in cropper.crop_frames(VideoReader(path, fps)):
        if ok:
            last_face = crop
        elif missing_face == "retain" and last_face is not None:
            crop = last_face
        crops[n], found[n] = crop, ok
        n += 1
        if n == chunk_frames:
            yield crops.copy(), found.copy()
            n = 0
    if n:
        yield crops[:n].copy(), found[:n].copy()


class AudioWindows:
    """Per-frame log-mel windows of one recording, exactly as the training pipeline cuts them.

    The waveform comes from `audio_path` (any libsndfile format) or from the video's container; it is
    turned into the cache's log-mel spectrogram with the training cache's settings and z-scored with its
    training statistics. Frames past the end of the audio get the training mean (zeros), as in training.
    """

    def __init__(self, video: Path, audio_path: Path | None, cache: Cache, window_s: float):
        from pkd_jax.data import audio

        settings = cache.config
        rate, fps = settings["sample_rate"], settings["fps"]
        samples = audio.load_wav(audio_path, rate) if audio_path else audio.load_container_audio(video, rate)
        self.source = audio_path or video
        self.seconds = len(samples) / rate  # before padding to whole frames
        per_frame = rate // fps
        samples = audio.fit_length(samples, -(-len(samples) // per_frame) * per_frame)
        logmel = audio.log_mel(
            samples, sample_rate=rate, n_fft=settings["n_fft"], hop=settings["hop"], n_mels=settings["n_mels"],
            fmin=settings["fmin"], fmax=settings["fmax"], log_floor=settings["log_floor"],
        )  # fmt: skip
        if not np.isfinite(logmel).all():
            raise PredictError(f"{audio_path or video}: non-finite log-mel spectrogram")
        empty = np.zeros(0)
        self._video = CachedVideo(video.stem, "predict", empty, empty, logmel, empty, empty)
        self._reader = FrameReader(cache, PipelineConfig(with_audio=True, audio_window_s=window_s))

    def __call__(self, index: np.ndarray) -> np.ndarray:
        """float32 [len(index), n_mels, W, 1] windows centred on frames `index`."""
        return self._reader.audio(self._video, index)


def check_audio_length(
    video: Path, num_frames: int, fps: float, windows: AudioWindows, settings: Mapping[str, Any]
) -> None:
    """Refuses audio whose length differs from the video's as preprocessing refuses it.

    The tolerance is preprocessing's (`length_tolerance_fraction` of the longer stream, or
    `length_tolerance_frames`, whichever is larger), read from the training cache's settings.

    Args:
      video: The video file.
      num_frames: Its length in frames at `fps`.
      fps: The cache's frame rate.
      windows: The audio, whose `source` and `seconds` are compared.
      settings: The preprocessing settings (`PreprocessConfig` fields).

    Raises:
      PredictError: naming both files and both lengths in frames and seconds.
    """
    defaults = PreprocessConfig
    lengths = {
        "video": Length(num_frames, f"{video}, {num_frames / fps:.2f} s"),
        "audio": Length(windows.seconds * fps, f"{windows.source}, {windows.seconds:.2f} s"),
    }
    try:
        reconcile_lengths(
            str(video),
            lengths,
            tolerance_fraction=settings.get("length_tolerance_fraction", defaults.length_tolerance_fraction),
            tolerance_frames=settings.get("length_tolerance_frames", defaults.length_tolerance_frames),
        )
    except LengthMismatchError as e:
        raise PredictError(str(e)) from e  # "<video>: stream lengths differ by ...: video ..., audio ..."
