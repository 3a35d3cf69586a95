"""The negative control `config.teacher.shuffle`: the cached teacher's outputs moved off their frames.

A student distilled from a teacher whose outputs belong to other frames receives the same kind of signal
(same teacher, same statistics, same gate machinery) with the privileged information about *these*
frames removed. If distillation transmits privileged knowledge, that student's gain over the visual
baseline must vanish.

  * "recording": each training recording gets the outputs of another one, a fixed derangement (cyclic
    over the sorted ids: the i-th takes the (i+1)-th's), time-aligned: its clip start s gets the other's
    clip start s, the other's outputs cut to its length or tiled when shorter;
  * "time": each recording keeps its own outputs, circularly shifted by half the recording: the clip
    at start s gets those of start s + T // 2 (wrapping around), T its number of frames.

Everything the cached mode gives the loss and the gate moves together: the per-clip predictions and
embeddings (`pkd_jax.precompute.teacher_cache`) and the per-frame track the window gate judges the
teacher on (`pkd_jax.precompute.gate_track`), so the gate judges the shuffled teacher against the
recording's own labels. Arrays are indexed along axis 0 by clip start or by frame.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

TEACHER_SHUFFLES = ("none", "recording", "time")


def derangement(video_ids: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Recording -> the recording whose teacher outputs it gets: cyclic over the sorted ids, so no
    recording keeps its own."""
    ordered = sorted(video_ids)
    if len(ordered) < 2:
        raise ValueError(
            f"config.teacher.shuffle='recording' needs at least 2 training recordings to exchange "
            f"outputs between, the cache has {ordered}"
        )
    return {v: ordered[(i + 1) % len(ordered)] for i, v in enumerate(ordered)}


def time_shift(num_frames: int) -> int:
    """Frames the "time" shuffle moves a recording's outputs by: half the recording."""
    return num_frames // 2


def fit_length(rows: np.ndarray, length: int) -> np.ndarray:
    """`rows` cut to `length` along axis 0 (a view), or tiled to it when shorter, time-aligned."""
    if len(rows) >= length:
        return rows[:length]
    return rows[np.arange(length) % len(rows)]


def shuffle_rows(
    arrays: Mapping[str, np.ndarray], mode: str, num_frames: Mapping[str, int]
) -> dict[str, np.ndarray]:
    """Per-recording arrays (axis 0: clip start or frame) moved as `mode` says (see the module doc).

    Args:
      arrays: recording id -> array; every training recording, since "recording" exchanges among them.
      mode: one of `TEACHER_SHUFFLES`; "none" returns the arrays as they are.
      num_frames: recording id -> its frames, which set the "time" shift (the same for a recording's
        per-clip and per-frame arrays).
    """
    if mode == "none":
        return dict(arrays)
    if mode == "recording":
        source = derangement(list(arrays))
        return {v: fit_length(arrays[source[v]], len(rows)) for v, rows in arrays.items()}
    if mode == "time":
        # np.roll by -k: row i takes row (i + k) mod n.
        return {v: np.roll(rows, -time_shift(num_frames[v]), axis=0) for v, rows in arrays.items()}
    raise ValueError(f"config.teacher.shuffle={mode!r}: choose one of {list(TEACHER_SHUFFLES)}")
