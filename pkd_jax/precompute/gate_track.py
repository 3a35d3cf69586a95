"""The gate's view of the teacher: a per-frame track over every training video, and windowed gamma.

The paper's gate trusts the teacher on a sequence when gamma = 1 - CCC(teacher, labels) <= theta. CCC
over a clip of a few frames of smooth labels is close to 0 for any predictor, so measured on the clip
alone the gate almost never opens. The "window" gate context measures gamma over `window_frames` frames
of the same video centred on the clip instead:

  1. once before training, the frozen teacher predicts every frame of every training video in one
     continuous pass (its recurrent state carried across chunks, as in evaluation): the *track*. The
     cached teacher mode gets it from the per-frame features it computes anyway; online mode runs it;
  2. for every clip start s, gamma(s) is 1 - CCC of the track against the labels over the window,
     averaged over targets, with invalid labels masked. Track and labels are fixed, so gamma is a
     pure function of (video, start), computed for all starts at once from prefix sums in float64;
  3. the input pipeline hands gamma(start) to the loss as `batch["gate_gamma"]`, so online and cached
     distillation see the same gate decisions.

Window of a clip [s, s + L): [s + (L - W) // 2, ... + W), cut at the video's ends (never shifted, so a
clip near an end is judged on fewer frames); a window shorter than the clip is the clip itself. The
track and the per-start gammas are stored in `<student workdir>/gate/` and reused on resume while the
teacher's parameters, the feature cache and the data settings are unchanged (`fingerprint`: by content,
so a moved teacher workdir keeps the track and a teacher retrained in place recomputes it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.typing import DTypeLike

from pkd_jax.cached import fingerprint as content_fingerprint
from pkd_jax.cached import save_npz_atomic, tree_digest, write_text_atomic
from pkd_jax.ccc_kernel import LOSS_EPS, ccc_from_moments, masked_moments
from pkd_jax.config import build
from pkd_jax.data.cache import Cache
from pkd_jax.data.labelled import labelled_recordings
from pkd_jax.models import Teacher
from pkd_jax.precompute.teacher_shuffle import shuffle_rows

# The loss's eps: gamma precomputed here must decide as the gamma the loss computes online.
CCC_EPS = LOSS_EPS


def window_bounds(num_frames: int, clip_frames: int, window_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) of the gate window of every clip start 0 .. T - L (at least one start)."""
    starts = np.arange(max(num_frames - clip_frames + 1, 1))
    if window_frames <= clip_frames:
        return starts, np.minimum(starts + clip_frames, num_frames)
    lo = starts + (clip_frames - window_frames) // 2
    return np.maximum(lo, 0), np.minimum(lo + window_frames, num_frames)


def windowed_gamma(
    track: np.ndarray, labels: np.ndarray, mask: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """1 - CCC(track, labels) over frames [lo, hi) of one video, averaged over targets, float64 [S].

    track, labels: [T, K]; mask: [T], 1 where the label counts. Population moments over the masked
    frames, the CCC by `pkd_jax.ccc_kernel` as in the loss: a window with no valid frame gets CCC 0
    (gamma 1).
    """
    w = np.asarray(mask, np.float64)[:, None]
    x = np.where(w > 0, np.asarray(track, np.float64), 0.0)
    y = np.where(w > 0, np.asarray(labels, np.float64), 0.0)

    def window_sum(v: np.ndarray) -> np.ndarray:
        prefix = np.concatenate([np.zeros((1, v.shape[1])), np.cumsum(v, axis=0)])
        return prefix[hi] - prefix[lo]

    n = window_sum(np.broadcast_to(w, x.shape))
    safe = np.maximum(n, 1.0)
    mx, my = window_sum(w * x) / safe, window_sum(w * y) / safe
    # E[xy] - E[x]E[y] in float64 is exact enough here (|values| <= a few units, windows <= 10^5).
    vx = window_sum(w * x * x) / safe - mx * mx
    vy = window_sum(w * y * y) / safe - my * my
    cov = window_sum(w * x * y) / safe - mx * my
    # Clamped: rounding can leave E[x^2] - E[x]^2 a hair below 0 on a constant stretch.
    ccc = ccc_from_moments(mx, my, np.maximum(vx, 0.0), np.maximum(vy, 0.0), cov, eps=CCC_EPS, xp=np)
    return np.mean(1.0 - ccc, axis=1)


def clip_gamma(clip_pred: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """1 - CCC of the teacher's own clip predictions [S, L, K] (the cached teacher's, clip start s on
    frames s .. s + L - 1) against the labels, per clip start, float64 [S]: the "clip" context's gamma,
    the loss's per-sequence gamma in float64 (a clip with no valid label gets 0, as there)."""
    s, length = clip_pred.shape[:2]
    index = np.arange(s)[:, None] + np.arange(length)[None, :]
    w = np.asarray(mask, np.float64)[index][..., None]
    x, y = np.asarray(clip_pred, np.float64), np.asarray(labels, np.float64)[index]
    moments = masked_moments(x, y, w, axis=1, xp=np)  # each [S, 1, K]
    ccc = ccc_from_moments(*moments, eps=CCC_EPS, xp=np)[:, 0]
    has = w.sum(axis=1) > 0
    return np.mean(np.where(has, 1.0 - ccc, 0.0), axis=1)


def teacher_track(
    teacher: Teacher,
    variables: Any,
    cache: Cache,
    config: ml_collections.ConfigDict,
    *,
    split: str = "train",
    dtype: DTypeLike = jnp.float32,
) -> dict[str, np.ndarray]:
    """The frozen teacher's predictions [T, K] of every frame of every `split` video, one pass each.

    Clips (weak setting): chunked inference carrying the recurrent state, as in evaluation. Windows
    (strong setting): windows tiling the video, each sub-sequence's prediction given to its frames.
    The student's missing-face policy and audio window apply, as the teacher sees them in distillation.
    """
    from pkd_jax.train.evaluate import predict_videos, predict_windows

    if build.is_windowed(config):
        return predict_windows(teacher, variables, cache, split, config, dtype=dtype)[0]
    return predict_videos(
        teacher, variables, cache, split,
        chunk_frames=config.data.eval_chunk_frames, videos_per_batch=config.data.eval_videos_per_batch,
        missing_face=config.data.missing_face, audio_window_s=config.data.audio_window_s, dtype=dtype,
        physio=build.physio_pipeline(config),
    )  # fmt: skip


def gammas_from_track(
    track: dict[str, np.ndarray],
    cache: Cache,
    targets: tuple[int, ...],
    *,
    clip_frames: int,
    window_frames: int,
) -> dict[str, np.ndarray]:
    """Windowed gamma of every clip start of every tracked video, float32 [S] per video."""
    out = {}
    for video_id, pred in track.items():
        video = cache.video(video_id)
        labels = np.asarray(video.labels, np.float64)[:, list(targets)]
        lo, hi = window_bounds(len(pred), clip_frames, window_frames)
        out[video_id] = windowed_gamma(pred, labels, np.asarray(video.label_mask), lo, hi).astype(np.float32)
    return out


def clip_span(config: ml_collections.ConfigDict) -> int:
    """Frames one training sequence spans: a clip, or a whole window in the strong setting."""
    return config.data.window_subsequences * config.data.subsequence_frames or config.data.clip_frames


def fingerprint(config: ml_collections.ConfigDict, teacher_variables: Any, cache: Cache) -> str:
    """What the stored track depends on, by content: the teacher's parameters and statistics (not the path
    of its checkpoint), the cache's manifest and the data settings the teacher's inputs depend on.

    A track stored before this key hashed content (it named the teacher's checkpoint path) reads as
    another teacher's and is recomputed once.
    """
    settings = {
        "targets": list(build.target_names(config)),
        "missing_face": config.data.missing_face,
        "audio_window_s": config.data.audio_window_s,
        "windows": build.window_fields(config),
        "clip_frames": config.data.clip_frames,
        "dtype": config.model.dtype,
    }
    manifest = (Path(cache.root) / "manifest.json").read_bytes()
    return content_fingerprint("gate track", tree_digest(teacher_variables), manifest, settings)


def load_or_compute_track(
    directory: Path,
    key: str,
    compute: Any,
    *,
    write: bool = True,
) -> dict[str, np.ndarray]:
    """The track stored in `directory/track.npz` under fingerprint `key`, else `compute()` (stored).

    A stored track with another fingerprint (another teacher checkpoint, cache or data setting) is
    recomputed, with a warning saying so.
    """
    path = directory / "track.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["__fingerprint__"]) == key:
                logging.info("Gate: reusing the teacher track in %s.", path)
                return {k: stored[k] for k in stored.files if k != "__fingerprint__"}
        logging.warning("Gate: %s belongs to another teacher, cache or data setting; recomputing.", path)
    track = compute()
    if write:
        directory.mkdir(parents=True, exist_ok=True)
        save_npz_atomic(path, __fingerprint__=np.asarray(key), **track)
    return track


def expected_distilled_share(gate: str, gammas: np.ndarray, theta: float) -> float:
    """Share of uniformly drawn training sequences the built-in `gate` would distil, given their gamma."""
    if gate == "none":
        return 1.0
    if gate == "paper":
        return float(np.mean(gammas <= theta))
    if gate == "released_code":
        return float(np.mean((gammas <= theta) | (gammas > 1.0)))
    raise ValueError(f"unknown gate {gate!r}")


def _judged(video_id: str, labelled: tuple[str, ...] | None) -> bool:
    """Whether the gate measures the teacher on `video_id`: every recording, or the labelled ones."""
    return labelled is None or video_id in labelled


def _num_frames(cache: Cache, videos: Any) -> dict[str, int]:
    """Frames of each of `videos`: the "time" shuffle moves a recording by half of them."""
    return {v: cache.video(v).num_frames for v in videos}


def _open_where_unlabelled(
    per_video: dict[str, np.ndarray],
    track: dict[str, np.ndarray],
    labelled: tuple[str, ...] | None,
    span: int,
) -> dict[str, np.ndarray]:
    """`per_video` gammas with gamma 0 on every clip start of the unlabelled recordings of `track`."""
    if labelled is None:
        return per_video
    out = dict(per_video)
    for video_id, pred in track.items():
        if video_id not in labelled:
            out[video_id] = np.zeros(len(window_bounds(len(pred), span, span)[0]), np.float32)
    return out


def validate_gate_config(config: ml_collections.ConfigDict) -> None:
    """Clear errors for gate settings that cannot work together (`config_check` has checked each value)."""
    lo = config.loss
    if lo.gate_window_frames < 1:
        raise ValueError(f"config.loss.gate_window_frames={lo.gate_window_frames} must be >= 1")
    if not 0.0 <= lo.theta_quantile < 1.0:
        raise ValueError(f"config.loss.theta_quantile={lo.theta_quantile} must be in [0, 1) (0: use theta)")
    if lo.theta_quantile and lo.gate_context == "batch":
        raise ValueError(
            "config.loss.theta_quantile needs gamma over the training sequences before training: use "
            "gate_context='window' (or 'clip' with teacher.mode='cached'); 'batch' gamma depends on the draw"
        )
    if lo.theta_quantile and lo.gate_context == "clip" and config.teacher.mode != "cached":
        raise ValueError("config.loss.theta_quantile with gate_context='clip' needs teacher.mode='cached'")


def prepare_gate(
    config: ml_collections.ConfigDict,
    workdir: Path,
    *,
    teacher: Teacher,
    teacher_variables: Any,
    cache: Cache,
    teacher_cache: dict[str, dict[str, np.ndarray]] | None,
    dtype: DTypeLike,
    chief: bool,
    name: str = "gate",
    teacher_source: str | None = None,
) -> tuple[dict[str, dict[str, np.ndarray]], float, dict[str, Any]]:
    """What a student's gate needs before training: `(extra_arrays, theta, info)`.

    Two controls change what the gate sees (docs/training.md "Controls"). `config.teacher.shuffle` moves
    the track after it is loaded (the stored track stays the teacher's own), as `teacher_cache`'s clip
    outputs were moved by the caller. With `config.data.labelled_recordings`, gamma is measured on the
    labelled recordings only: theta's quantile, the quantiles and `gammas.npz` come from them, and an
    unlabelled recording's clips get gamma 0 (no labels, no evidence against the teacher: the gate is
    open there, and the expected distilled share counts them).

    extra_arrays: `{"gate_gamma": {video: [S]}}` for the "window" context (the pipeline adds it to
    every batch), else empty. theta: `config.loss.theta`, or the `theta_quantile` quantile of the
    teacher's gamma over every training clip start. info (written to `<workdir>/gate.json`, with the
    gammas in `<workdir>/gate/gammas.npz` when known): context, window, theta, the share of training
    sequences the gate is expected to distil. `name` names those files (`<workdir>/<name>.json`, ...):
    one set per teacher for several teachers. `teacher_source` (the checkpoint's path) is only logged:
    the stored track is keyed by the teacher's parameters (`fingerprint`).
    """
    lo = config.loss
    targets = build.target_indices(config)
    span = clip_span(config)
    labelled = labelled_recordings(config, cache)  # None: every training recording
    per_video: dict[str, np.ndarray] | None = None
    extra: dict[str, dict[str, np.ndarray]] = {}
    if lo.gate_context == "window":
        track = load_or_compute_track(
            workdir / name,
            fingerprint(config, teacher_variables, cache),
            # The cached teacher's pass over every frame already gives the track; online needs its own.
            lambda: (
                (teacher_cache or {}).get("teacher_track")
                or teacher_track(teacher, teacher_variables, cache, config, dtype=dtype)
            ),
            write=chief,
        )
        track = shuffle_rows(track, config.teacher.shuffle, _num_frames(cache, track))
        per_video = gammas_from_track(
            {v: t for v, t in track.items() if _judged(v, labelled)}, cache, targets, clip_frames=span,
            window_frames=lo.gate_window_frames,
        )  # fmt: skip
        per_video = _open_where_unlabelled(per_video, track, labelled, span)
        extra["gate_gamma"] = per_video
    elif lo.gate_context == "clip" and teacher_cache is not None:
        per_video = {}
        for video_id, clip_pred in teacher_cache["teacher_pred"].items():
            if not _judged(video_id, labelled):
                per_video[video_id] = np.zeros(len(clip_pred), np.float32)  # no labels: the gate is open
                continue
            video = cache.video(video_id)
            labels = np.asarray(video.labels)[:, list(targets)]
            per_video[video_id] = clip_gamma(clip_pred, labels, np.asarray(video.label_mask)).astype(
                np.float32
            )
    # The teacher is judged where there are labels; the share it is expected to distil counts every clip.
    judged = {v: g for v, g in (per_video or {}).items() if _judged(v, labelled)}
    gammas = np.concatenate(list(judged.values())) if judged else None
    every_clip = np.concatenate(list(per_video.values())) if per_video else None
    theta = float(lo.theta)
    if lo.theta_quantile:
        if gammas is None:  # `validate_gate_config` rules out the contexts without gammas; no clips left
            raise ValueError(
                "config.loss.theta_quantile: no teacher gamma over the training clips to take it from"
            )
        theta = float(np.quantile(gammas, lo.theta_quantile))
    info: dict[str, Any] = {
        "gate": lo.gate,
        "context": lo.gate_context,
        "window_frames": int(lo.gate_window_frames) if lo.gate_context == "window" else 0,
        "theta": theta,
        "theta_quantile": float(lo.theta_quantile),
        "expected_distilled_share": None,
    }
    if labelled is not None:
        info["labelled_recordings"] = list(labelled)
    if gammas is not None and every_clip is not None:
        info["expected_distilled_share"] = expected_distilled_share(lo.gate, every_clip, theta)
        info["gamma_quantiles"] = {
            f"q{int(q * 100)}": float(np.quantile(gammas, q)) for q in (0.05, 0.25, 0.5, 0.75, 0.95)
        }
    if chief:
        (workdir / name).mkdir(parents=True, exist_ok=True)
        if gammas is not None:
            save_npz_atomic(workdir / name / "gammas.npz", gamma=gammas)
        write_text_atomic(workdir / f"{name}.json", json.dumps(info, indent=2))
    logging.info(
        "Gate %s, context %s, teacher %s: theta %.4f, expected distilled share %s.",
        lo.gate, lo.gate_context, teacher_source or "(unnamed)", theta, info["expected_distilled_share"],
    )  # fmt: skip
    return extra, theta, info
