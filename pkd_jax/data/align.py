"""Length reconciliation between a video's streams, and the aligned result a corpus reader returns.

Frame t, label t and audio window t must describe the same 1/fps seconds. Sources rarely agree to the
frame (encoder padding, rating files one row longer), so lengths that differ by at most the tolerance are
truncated to the shortest, with a warning that states every length and its file; larger differences mean
a broken or mismatched file and are refused.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


class LabelError(ValueError):
    """A missing, malformed or inconsistent label file; the message names it."""


class LengthMismatchError(ValueError):
    """Streams of one video whose lengths differ by more than the tolerance; names the files."""


@dataclasses.dataclass(frozen=True)
class Length:
    """The length of one stream in output (fps) frames, and where it came from."""

    frames: float
    source: Path | str


def reconcile_lengths(
    video_id: str, lengths: Mapping[str, Length], *, tolerance_fraction: float, tolerance_frames: int
) -> tuple[int, list[str]]:
    """The common number of frames and the warnings to store.

    Args:
      video_id: For messages.
      lengths: Stream name -> its length (fractional lengths, e.g. audio, are rounded to whole frames).
      tolerance_fraction: Largest accepted difference as a fraction of the longest stream ...
      tolerance_frames: ... or in frames, whichever is larger.

    Raises:
      LengthMismatchError: when the longest and shortest differ by more than the tolerance, or a stream
        is empty; the message lists every stream with its file.
    """
    whole = {name: math.floor(length.frames + 0.5) for name, length in lengths.items()}
    described = ", ".join(
        f"{name} {length.frames:g} frames ({length.source})" for name, length in lengths.items()
    )
    shortest, longest = min(whole.values()), max(whole.values())
    if shortest <= 0:
        raise LengthMismatchError(f"{video_id}: empty stream: {described}")
    allowed = max(tolerance_fraction * longest, tolerance_frames)
    if longest - shortest > allowed:
        raise LengthMismatchError(
            f"{video_id}: stream lengths differ by {longest - shortest} frames, more than the tolerance of "
            f"{allowed:g}: {described}"
        )
    if longest == shortest:
        return shortest, []
    return shortest, [f"{video_id}: stream lengths differ: {described}; truncated to {shortest} frames"]


@dataclasses.dataclass
class AlignedVideo:
    """One video's streams on a common timeline of `num_frames` frames at the cache's fps.

    Attributes:
      frames: uint8 [T, S, S, 3] face crops (black where no face).
      face_found: bool [T].
      labels: float32 [T, 2] (valence, arousal).
      label_mask: bool [T].
      audio: float32 [T * sample_rate / fps] mono waveform.
      warnings: Human-readable notes stored with the video.
      extra: JSON-serialisable facts for the video's meta.json (sources, lengths, timings).
      physio: float32 [T, 4] physiological features (`physio_features.PHYSIO_FEATURES`), or None.
    """

    frames: np.ndarray
    face_found: np.ndarray
    labels: np.ndarray
    label_mask: np.ndarray
    audio: np.ndarray
    warnings: list[str] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    physio: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def check(self, samples_per_frame: int) -> None:
        """Asserts the shapes agree (a reader bug otherwise, not a data problem)."""
        t = self.num_frames
        ok = (
            self.face_found.shape == (t,)
            and self.labels.shape == (t, 2)
            and self.label_mask.shape == (t,)
            and self.audio.shape == (t * samples_per_frame,)
            and (self.physio is None or self.physio.shape == (t, 4))
        )
        if not ok:
            physio = None if self.physio is None else self.physio.shape
            raise AssertionError(
                f"misaligned streams: frames {self.frames.shape}, face_found {self.face_found.shape}, labels "
                f"{self.labels.shape}, label_mask {self.label_mask.shape}, audio {self.audio.shape}, "
                f"physio {physio}"
            )
