"""Inputs of inference, cut exactly as the training pipeline cuts them: face crops chunk by chunk, and
per-frame log-mel windows for a teacher. Students need no audio: audio libraries are imported only when a
teacher's `AudioWindows` is built."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pkd_jax.data.cache import Cache, CachedVideo
from pkd_jax.data.faces import FaceCropper
from pkd_jax.data.pipeline import MISSING_FACE_POLICIES, FrameReader, PipelineConfig
from pkd_jax.data.video import VideoReader


class PredictError(ValueError):
    """A video that cannot be predicted (unreadable, no face at all, bad audio); names the file."""


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
    for frame in VideoReader(path, fps):
        crop, ok = cropper(frame)
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
