"""`Predictor`: a trained network run over whole videos, chunk by chunk, carrying the recurrent state
from chunk to chunk, so a video of any length is one continuous sequence in bounded memory."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from pkd_jax.config import build
from pkd_jax.data.cache import CacheError
from pkd_jax.data.video import probe_video
from pkd_jax.inference.frames import (
    AudioWindows,
    PredictError,
    check_audio_length,
    check_video_file,
    face_chunks,
)
from pkd_jax.inference.settings import make_cropper, preprocess_settings
from pkd_jax.models.inputs import eval_modalities
from pkd_jax.train.steps import make_stream_step
from pkd_jax.workdir.trained import Trained


@dataclasses.dataclass
class VideoPrediction:
    """Per-frame results of one video."""

    path: Path
    fps: float
    pred: np.ndarray  # float32 [T, targets]
    face_found: np.ndarray  # bool [T]
    targets: tuple[str, ...]
    seconds: float  # wall time, decoding included, compilation excluded

    @property
    def num_frames(self) -> int:
        return len(self.face_found)


class Predictor:
    """Runs a trained network over videos, chunk by chunk, with one compiled step for all chunks.

    Args:
      trained: The network (see `pkd_jax.workdir.trained.load_trained`).
      chunk_frames: Frames per step; None uses the training config's `data.eval_chunk_frames`.
      cache_dir: The training feature cache (face settings, and audio statistics for a teacher); None
        uses the one the training config names.
      detector_weights: The face detector's weights file, replacing the one the cache's settings name.
    """

    def __init__(
        self,
        trained: Trained,
        *,
        chunk_frames: int | None = None,
        cache_dir: str | Path | None = None,
        detector_weights: str | Path | None = None,
    ):
        config = trained.config
        self.trained = trained
        self.chunk_frames = int(chunk_frames or config.data.eval_chunk_frames)
        if self.chunk_frames < 1:
            raise ValueError(f"chunk_frames={self.chunk_frames} must be positive")
        self.settings, self.cache = preprocess_settings(config, cache_dir)
        self.cropper = make_cropper(self.settings, detector_weights)
        if trained.is_teacher:
            if set(eval_modalities(trained.model)) != {"audio", "visual"}:
                raise ValueError(
                    f"{trained.source}: a teacher of {eval_modalities(trained.model)}; predict runs "
                    "students and audio-visual teachers (new videos come without physiological recordings)"
                )
            if self.cache is None:
                raise CacheError(
                    "a teacher needs the training split's audio statistics from its feature cache "
                    f"({build.cache_dir(config) or 'the config names none'}); pass --cache=DIR"
                )
            self.cache.audio_stats()  # fails now, naming the manifest, rather than on the first video
        self.variables = jax.device_put(trained.variables)
        self._step = jax.jit(make_stream_step(trained.model, build.compute_dtype(config)))
        self._compiled: Any = None  # compiled on the first chunk; every chunk has the same shapes
        self.compile_seconds = 0.0

    def predict(
        self,
        path: str | Path,
        *,
        audio: str | Path | None = None,
        on_frames: Callable[[int], None] | None = None,
    ) -> VideoPrediction:
        """Predictions for every frame of the video at `path`.

        Args:
          path: The video file.
          audio: Teachers only: an audio file to use instead of the container's audio track.
          on_frames: Called with the number of frames after each chunk (progress).

        Raises:
          VideoError, PredictError: naming the file, for a path that is missing, a directory or a still
            image (`check_video_file`), an unreadable video or audio, a teacher's audio whose length is
            not the video's within preprocessing's tolerance (`check_audio_length`), or a video in which
            no face is ever found.
        """
        path = Path(path)
        check_video_file(path)
        start, compiling = time.perf_counter(), 0.0
        model, fps = self.trained.model, float(self.settings["fps"])
        windows = None
        if self.trained.is_teacher:
            from pkd_jax.data.audio import AudioError

            assert self.cache is not None  # __init__ refuses a teacher without one
            try:
                windows = AudioWindows(
                    path, Path(audio) if audio else None, self.cache, self.trained.config.data.audio_window_s
                )
            except AudioError as e:
                raise PredictError(str(e)) from e
            info = probe_video(path)  # its frame count is 0 when the container does not state it
            if info.num_frames:  # refused before decoding; the decoded length is checked again below
                check_audio_length(path, round(info.num_frames * fps / info.fps), fps, windows, self.settings)
        elif audio:
            raise ValueError(f"{path}: audio given, but the {self.trained.config.stage} model takes no audio")
        carry = model.zero_carry(1)
        preds: list[np.ndarray] = []
        found: list[np.ndarray] = []
        pending: tuple[jax.Array, int] | None = None
        done = 0
        chunks = face_chunks(
            path, self.cropper, fps=fps, chunk_frames=self.chunk_frames,
            missing_face=self.trained.config.data.missing_face,
        )  # fmt: skip
        for crops, ok in chunks:
            n = len(ok)
            # The last chunk is padded to the full length: one compiled program for every chunk. Padding
            # comes after the real frames, so it cannot change their (causal) predictions.
            batch = {"frames": _pad(crops, self.chunk_frames)[None]}
            if windows is not None:
                batch["audio"] = _pad(windows(np.arange(done, done + n)), self.chunk_frames)[None]
            if self._compiled is None:
                tick = time.perf_counter()
                self._compiled = self._step.lower(self.variables, batch, carry).compile()
                compiling = self.compile_seconds = time.perf_counter() - tick
            pred, _, carry = self._compiled(self.variables, batch, carry)  # dispatched asynchronously
            if pending is not None:  # the previous chunk's results, fetched while this one computes
                preds.append(np.asarray(pending[0])[0, : pending[1]])
            pending = (pred, n)
            found.append(ok)
            done += n
            if on_frames:
                on_frames(n)
        if pending is not None:
            preds.append(np.asarray(pending[0])[0, : pending[1]])
        face_found = np.concatenate(found) if found else np.zeros(0, bool)
        if windows is not None:
            check_audio_length(path, len(face_found), fps, windows, self.settings)
        if not face_found.any():
            raise PredictError(f"{path}: no face found in any of its {len(face_found)} frames")
        seconds = time.perf_counter() - start - compiling
        return VideoPrediction(path, fps, np.concatenate(preds), face_found, self.trained.targets, seconds)


def _pad(array: np.ndarray, length: int) -> np.ndarray:
    if len(array) == length:
        return array
    return np.concatenate([array, np.zeros((length - len(array), *array.shape[1:]), array.dtype)])
