"""The `cached` teacher mode: the frozen teacher's outputs for every training clip, computed once.

Online, the teacher sees each training clip on its own, from a zero recurrent state, so a frame's
teacher output depends on where its clip starts. The cache therefore holds, for every clip start s of
every training video, the outputs on frames s .. s + L - 1: arrays [T - L + 1, L, ...] that the input
pipeline slices by clip start. The expensive part, the per-frame trunks, runs once per frame; only the
recurrent layer and head run once per clip start. With no augmentation this equals online distillation.
With `with_track`, the same per-frame features also give the teacher's track for the gate (one pass
of the recurrent layer over each whole video, see `pkd_jax.train.gate_track`), at no second trunk pass.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike
from tqdm import tqdm

from pkd_jax.data.cache import Cache
from pkd_jax.data.pipeline import eval_batches
from pkd_jax.models import Teacher
from pkd_jax.train.build import model_inputs


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
) -> dict[str, dict[str, np.ndarray]]:
    """`{"teacher_pred": {video: [S, L, K]}, "teacher_emb": {video: [S, L, D]}}` for `split`, and with
    `with_track` also `"teacher_track": {video: [T, K]}`, the predictions of one continuous pass."""
    features = jax.jit(
        lambda v, frames, audio: teacher.apply(v, frames, audio, train=False, method="frame_features")
    )
    heads = jax.jit(lambda v, vis, aud: teacher.apply(v, vis, aud, method="from_features")[:2])
    whole = jax.jit(lambda v, vis, aud: teacher.apply(v, vis, aud, method="from_features")[0])
    preds: dict[str, np.ndarray] = {}
    embs: dict[str, np.ndarray] = {}
    tracks: dict[str, np.ndarray] = {}
    # Every process computes the cache; only process 0 shows it.
    for video_id in tqdm(
        cache.ids(split), desc="teacher cache", unit="video", disable=jax.process_index() != 0
    ):
        visual, audio = [], []
        for batch in eval_batches(
            cache, split, chunk_frames=chunk_frames, video_ids=[video_id], missing_face=missing_face,
            audio_window_s=audio_window_s,
        ):  # fmt: skip
            keep = batch["frame_mask"][0] > 0
            v, a = features(variables, *model_inputs(teacher, batch, dtype))
            visual.append(np.asarray(v[0][keep]))
            audio.append(np.asarray(a[0][keep]))
        visual_seq, audio_seq = np.concatenate(visual), np.concatenate(audio)
        if with_track:
            tracks[video_id] = np.asarray(whole(variables, visual_seq[None], audio_seq[None])[0])
        starts = len(visual_seq) - clip_frames + 1
        # [S, L, D] views of every clip window, evaluated in fixed-size groups (one compilation).
        vis_windows = np.lib.stride_tricks.sliding_window_view(visual_seq, clip_frames, axis=0)
        aud_windows = np.lib.stride_tricks.sliding_window_view(audio_seq, clip_frames, axis=0)
        vis_windows, aud_windows = np.moveaxis(vis_windows, -1, 1), np.moveaxis(aud_windows, -1, 1)
        pred_parts, emb_parts = [], []
        for s in range(0, starts, clips_per_call):
            count = min(clips_per_call, starts - s)
            vis = _pad_to(vis_windows[s : s + count], clips_per_call)
            aud = _pad_to(aud_windows[s : s + count], clips_per_call)
            p, e = heads(variables, vis, aud)
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
