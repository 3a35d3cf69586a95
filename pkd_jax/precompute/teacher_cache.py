"""The `cached` teacher mode: the frozen teacher's outputs for every training clip, computed once.

Online, the teacher sees each training clip on its own, from a zero recurrent state, so a frame's
teacher output depends on where its clip starts. The cache therefore holds, for every clip start s of
every training video, the outputs on frames s .. s + L - 1: arrays [T - L + 1, L, ...] that the input
pipeline slices by clip start. The expensive part, the per-frame trunks, runs once per frame; only the
recurrent layer and head run once per clip start. With no augmentation this equals online distillation.
With `with_track`, the same per-frame features also give the teacher's track for the gate (one pass
of the recurrent layer over each whole video, see `pkd_jax.precompute.gate_track`), at no second trunk pass.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike
from tqdm import tqdm

from pkd_jax.data.cache import Cache
from pkd_jax.data.pipeline import PipelineConfig, eval_batches
from pkd_jax.models import Teacher
from pkd_jax.models.inputs import feature_inputs, model_inputs


def compute_teacher_cache(
    teacher: Teacher,
    variables: Any,
    cache: Cache,
    *,
    clip_frames: int,
    missing_face: str,
    audio_window_s: float,
    dtype: DTypeLike = jnp.float32,
    split: str = "train",
    chunk_frames: int = 250,
    clips_per_call: int = 256,
    with_track: bool = False,
    physio: PipelineConfig | None = None,
    trunk_features: dict[str, dict[str, np.ndarray]] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """`{"teacher_pred": {video: [S, L, K]}, "teacher_emb": {video: [S, L, D]}}` for `split`, and with
    `with_track` also `"teacher_track": {video: [T, K]}`, the predictions of one continuous pass.
    `physio` gives the physiological windows' settings of a teacher that reads them; `trunk_features`
    its frozen trunks' cached features (`{"visual_features": {video: [T, D]}, ...}`), read instead of
    running those trunks."""

    @jax.jit
    def features(v: Any, inputs: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        return teacher.apply(v, *inputs, train=False, method="frame_features", **kw)

    heads = jax.jit(lambda v, streams: teacher.apply(v, streams, method="from_features")[:2])
    whole = jax.jit(lambda v, streams: teacher.apply(v, streams, method="from_features")[0])
    preds: dict[str, np.ndarray] = {}
    embs: dict[str, np.ndarray] = {}
    tracks: dict[str, np.ndarray] = {}
    # Every process computes the cache; only process 0 shows it.
    for video_id in tqdm(
        cache.ids(split), desc="teacher cache", unit="video", disable=jax.process_index() != 0
    ):
        parts: list[list[np.ndarray]] = [[] for _ in teacher.modality_order]
        for batch in eval_batches(
            cache, split, chunk_frames=chunk_frames, video_ids=[video_id], missing_face=missing_face,
            audio_window_s=audio_window_s, with_audio="audio" in teacher.modality_order,
            physio=physio if "physio" in teacher.modality_order else None, frame_arrays=trunk_features,
        ):  # fmt: skip
            keep = batch["frame_mask"][0] > 0
            inputs = (model_inputs(teacher, batch, dtype), feature_inputs(teacher, batch))
            for part, feats in zip(parts, features(variables, *inputs), strict=True):
                part.append(np.asarray(feats[0][keep]))
        sequences = [np.concatenate(part) for part in parts]  # per stream [T, D]
        if with_track:
            tracks[video_id] = np.asarray(whole(variables, [x[None] for x in sequences])[0])
        starts = len(sequences[0]) - clip_frames + 1
        # [S, L, D] views of every clip window, evaluated in fixed-size groups (one compilation).
        windows = [
            np.moveaxis(np.lib.stride_tricks.sliding_window_view(x, clip_frames, axis=0), -1, 1)
            for x in sequences
        ]
        pred_parts, emb_parts = [], []
        for s in range(0, starts, clips_per_call):
            count = min(clips_per_call, starts - s)
            p, e = heads(variables, [_pad_to(w[s : s + count], clips_per_call) for w in windows])
            pred_parts.append(np.asarray(p[:count]))
            emb_parts.append(np.asarray(e[:count]))
        preds[video_id] = np.concatenate(pred_parts)
        embs[video_id] = np.concatenate(emb_parts)
    out = {"teacher_pred": preds, "teacher_emb": embs}
    if with_track:
        out["teacher_track"] = tracks
    return out


def _pad_to(x: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([x, np.zeros((n - len(x), *x.shape[1:]), x.dtype)]) if len(x) < n else x
