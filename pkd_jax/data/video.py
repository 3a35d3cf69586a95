"""Video decoding at a fixed frame rate, with PyAV.

PyAV rather than `cv2.VideoCapture`: it gives each decoded frame its presentation timestamp (needed to
resample variable or non-25 fps sources by time rather than by frame index), it raises on corrupt input
where VideoCapture just returns `False`, and the same container API reads the audio track (Aff-Wild2 has
no separate wav).

Resampling: output frame k is the source frame whose timestamp (relative to the first frame) is nearest
to k / fps, the later one on a tie; the output covers the source's duration, last timestamp plus one
frame duration, i.e. `round(duration * fps)` frames. A source at exactly `fps` maps one to one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import numpy as np

# Timestamps are compared with this slack (s): pts * time_base and k / fps round differently.
_EPS = 1e-6


class VideoError(ValueError):
    """An unreadable, corrupt or empty video; the message names the file."""


def select_nearest[T](timed: Iterable[tuple[float, T]], fps: float, frame_duration: float) -> Iterator[T]:
    """Resamples a stream of (timestamp s, item) to `fps` by nearest timestamp (see module docstring).

    Args:
      timed: Items in presentation order with non-decreasing timestamps.
      fps: Output rate.
      frame_duration: Duration of the last source item (sets where the stream ends).
    """
    prev: tuple[float, T] | None = None
    start: float | None = None
    k = 0
    for t, item in timed:
        if start is None:
            start = t
        t -= start
        while k / fps <= t + _EPS:
            target = k / fps
            # `prev` is the last item before `target`, `item` the first at or after it.
            yield prev[1] if prev is not None and target - prev[0] < t - target - _EPS else item
            k += 1
        prev = (t, item)
    if prev is None:
        return
    n_out = round((prev[0] + frame_duration) * fps)
    while k < n_out:
        yield prev[1]
        k += 1


@dataclasses.dataclass
class VideoInfo:
    """Facts about a video file, from the container header (frame count may be an estimate)."""

    path: Path
    fps: float
    num_frames: int
    width: int
    height: int
    has_audio: bool


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise VideoError(f"{path}: video file missing")
    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoError(f"{path}: cannot open video ({e})") from e


def _rate(stream: av.video.stream.VideoStream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


def probe_video(path: str | Path) -> VideoInfo:
    """Reads the container header of `path` (no decoding)."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise VideoError(f"{path}: no video stream")
        stream = container.streams.video[0]
        fps = _rate(stream)
        if not fps:
            raise VideoError(f"{path}: no frame rate in the container")
        frames = stream.frames
        if not frames and stream.duration is not None and stream.time_base is not None:
            frames = round(float(stream.duration * stream.time_base) * fps)
        elif not frames and container.duration:
            frames = round(container.duration / av.time_base * fps)
        return VideoInfo(
            path, fps, int(frames or 0), stream.width, stream.height, bool(container.streams.audio)
        )


class VideoReader:
    """Iterates the RGB frames (uint8 [H, W, 3]) of a video resampled to `fps`.

    After a full iteration, `source_frames` and `source_fps` describe what was decoded.

    Raises:
      VideoError: naming the file, when it is missing, cannot be opened, has no video stream, fails to
        decode, or yields no frame.
    """

    def __init__(self, path: str | Path, fps: float = 25.0):
        self.path = Path(path)
        self.fps = fps
        self.source_frames = 0
        self.source_fps: float | None = None

    def _timed_frames(self, container: av.container.InputContainer) -> Iterator[tuple[float, av.VideoFrame]]:
        stream = container.streams.video[0]
        self.source_fps = _rate(stream)
        step = 1.0 / (self.source_fps or self.fps)
        last = -math.inf
        try:
            for frame in container.decode(stream):
                t = frame.time
                # Frames without a usable timestamp are placed one frame duration after the previous one.
                if t is None or t <= last:
                    t = last + step if math.isfinite(last) else 0.0
                last = t
                self.source_frames += 1
                yield t, frame
        except av.FFmpegError as e:
            raise VideoError(
                f"{self.path}: corrupt video data after {self.source_frames} frames ({e})"
            ) from e

    def __iter__(self) -> Iterator[np.ndarray]:
        self.source_frames = 0
        with _open(self.path) as container:
            if not container.streams.video:
                raise VideoError(f"{self.path}: no video stream")
            step = 1.0 / (_rate(container.streams.video[0]) or self.fps)
            # Only selected frames are converted to RGB; a repeated frame (upsampling) is converted once.
            last_frame, last_rgb = None, None
            for frame in select_nearest(self._timed_frames(container), self.fps, step):
                if frame is not last_frame:
                    last_frame, last_rgb = frame, frame.to_ndarray(format="rgb24")
                assert last_rgb is not None  # set on the first frame
                yield last_rgb
        if self.source_frames == 0:
            raise VideoError(f"{self.path}: no decodable video frames")
