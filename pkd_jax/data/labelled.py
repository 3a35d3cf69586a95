"""Training recordings with and without gold-standard labels (`config.data.labelled_recordings`).

Annotation is the expensive part of a RECOLA-like corpus, so a user may have labels on only some training
recordings. `data.labelled_recordings = ()` (the default) means every training recording is labelled,
and nothing here changes a run. Otherwise it names the labelled ones, and:

  * every stage draws its `data.batch_size` clips per step from those recordings only
    (`stream_recordings`): a student's, for a given seed, are the baseline's own clips;
  * a student adds `data.unlabelled_batch_size` clips of the other training recordings to every batch
    (`unlabelled_recordings`), so its supervision is the baseline's, undiluted, and the unlabelled
    recordings come on top. Each clip carries `batch["labelled"]`, 1 or 0 for its recording
    (`labelled_flags`): the loss takes the CCC term over the labelled clips alone and the distillation
    term over all of them (`pkd_jax.losses.labelled`).

The cache holds labels for every recording (RECOLA's are all annotated); "unlabelled" is what the run is
told, and no label of an unlabelled recording reaches the loss or the gate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from pkd_jax.data.cache import Cache

FIELD = "config.data.labelled_recordings"


def check_labelled_field(value: Any) -> list[str]:
    """Problems with the field's form, before any cache is open: a tuple of distinct, non-empty ids."""
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        return [f"{FIELD}={value!r}: a tuple of training recording ids, () for all"]
    bad = [v for v in value if not isinstance(v, str) or not v]
    if bad:
        return [f"{FIELD}={tuple(value)!r}: every entry must be a non-empty recording id, not {bad}"]
    repeated = sorted({v for v in value if list(value).count(v) > 1})
    if repeated:
        return [f"{FIELD}={tuple(value)!r}: names {repeated} more than once"]
    return []


def labelled_recordings(config: ml_collections.ConfigDict, cache: Cache) -> tuple[str, ...] | None:
    """The labelled training recordings in the cache's order, or None when every one is labelled.

    Raises a ValueError naming the ids that are not training recordings of the cache, with the
    recordings it has.
    """
    wanted = tuple(config.data.labelled_recordings)
    if not wanted:
        return None
    train = cache.ids("train")
    unknown = sorted(set(wanted) - set(train))
    if unknown:
        raise ValueError(
            f"{FIELD}: {unknown} are not training recordings of the cache {cache.root}; its training "
            f"recordings: {train}"
        )
    return tuple(v for v in train if v in set(wanted))


def stream_recordings(config: ml_collections.ConfigDict, cache: Cache) -> list[str]:
    """The training recordings a stage's (labelled) clip stream draws from: the labelled ones, every
    training recording when all are."""
    labelled = labelled_recordings(config, cache)
    return cache.ids("train") if labelled is None else list(labelled)


def unlabelled_recordings(config: ml_collections.ConfigDict, cache: Cache) -> tuple[list[str], int]:
    """`(recordings, clips per step)` of a student's second stream, the training recordings without
    labels (distillation alone); `([], 0)` for other stages or when every recording is labelled."""
    labelled = labelled_recordings(config, cache)
    if labelled is None or config.stage != "student":
        return [], 0
    others = [v for v in cache.ids("train") if v not in set(labelled)]
    return others, (config.data.unlabelled_batch_size or config.data.batch_size) if others else 0


def labelled_flags(cache: Cache, labelled: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """`{"labelled": {video: float32 [T]}}` for the pipeline's `extra_arrays`: every clip (or window)
    start of a training recording gives its recording's flag, 1 labelled, 0 not.

    Constant per recording, so each array is a broadcast scalar (no memory per frame); T starts cover
    every clip and window start of a T-frame recording.
    """
    chosen = set(labelled)
    flags = {}
    for video_id in cache.ids("train"):
        flag = np.float32(video_id in chosen)
        flags[video_id] = np.broadcast_to(flag, (cache.video(video_id).num_frames,))
    return {"labelled": flags}


def describe(config: ml_collections.ConfigDict, cache: Cache) -> str | None:
    """One line for the log: how many recordings and frames are labelled and how the stage uses them
    (None when every recording is labelled)."""
    labelled = labelled_recordings(config, cache)
    if labelled is None:
        return None
    train = cache.ids("train")
    frames = {v: cache.video(v).num_frames for v in train}
    used = sum(frames[v] for v in labelled)
    head = (
        f"{FIELD}: {len(labelled)} of {len(train)} training recordings labelled ({used} of "
        f"{sum(frames.values())} frames)"
    )
    if config.stage == "student":
        _, extra = unlabelled_recordings(config, cache)
        return (
            f"{head}; each step adds {extra} clips of the other {len(train) - len(labelled)} to the "
            f"{config.data.batch_size} labelled ones, for the distillation term alone"
        )
    return f"{head}; the {config.stage} trains on those only, the other {len(train) - len(labelled)} are unlabelled"
