"""Evaluation on whole videos: chunked inference carrying the recurrent state, then CCC.

Videos run as lanes of `eval_batches`; the carry is reset only at a video's first chunk, so every video
is seen as one continuous sequence. Scores are raw by default; the released code's post-processing is
added, labelled, only when asked for.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.typing import DTypeLike

from pkd_jax import metrics
from pkd_jax.config import build
from pkd_jax.data.cache import TARGETS, Cache
from pkd_jax.data.pipeline import PipelineConfig, eval_batches, eval_windows
from pkd_jax.models import Network
from pkd_jax.models.inputs import FEATURE_KEYS, eval_modalities, model_inputs
from pkd_jax.train.steps import make_stream_step, over_members

FeatureArrays = dict[str, dict[str, np.ndarray]]  # {"visual_features": {video: [T, D]}, ...}


def predict_videos(
    model: Network,
    variables: Any,
    cache: Cache,
    split: str,
    *,
    chunk_frames: int,
    videos_per_batch: int,
    missing_face: str,
    audio_window_s: float,
    dtype: DTypeLike = jnp.float32,
    video_ids: list[str] | None = None,
    stream_step: Any = None,
    physio: PipelineConfig | None = None,
    feature_arrays: FeatureArrays | None = None,
) -> dict[str, np.ndarray]:
    """Predictions [T, targets] of every video of `split`, from one continuous pass per video.
    `physio` gives the physiological windows' settings of a teacher that reads them; `feature_arrays`
    frozen trunks' cached features, which then stand for the trunk's input."""
    return predict_population(
        model, variables, cache, split, members=0, chunk_frames=chunk_frames,
        videos_per_batch=videos_per_batch, missing_face=missing_face, audio_window_s=audio_window_s,
        dtype=dtype, video_ids=video_ids, stream_step=stream_step, physio=physio,
        feature_arrays=feature_arrays,
    )[0]  # fmt: skip


def population_stream_step(model: Network, dtype: DTypeLike) -> Any:
    """The jitted streaming step of a population: variables and carry stacked over members, one input."""
    return jax.jit(over_members(make_stream_step(model, dtype), in_axes=(0, None, 0)))


def predict_population(
    model: Network,
    variables: Any,
    cache: Cache,
    split: str,
    *,
    members: int,
    chunk_frames: int,
    videos_per_batch: int,
    missing_face: str,
    audio_window_s: float,
    dtype: DTypeLike = jnp.float32,
    video_ids: list[str] | None = None,
    stream_step: Any = None,
    physio: PipelineConfig | None = None,
    feature_arrays: FeatureArrays | None = None,
) -> list[dict[str, np.ndarray]]:
    """`predict_videos` of each member of a population in one pass over the videos.

    `members` > 0: `variables` are stacked over a leading member axis of that size and `stream_step`
    (default `population_stream_step`) maps over it; 0: one model's variables. Returns one dict per member.
    """
    if stream_step is None:
        stream_step = (
            population_stream_step(model, dtype) if members else jax.jit(make_stream_step(model, dtype))
        )
    reads = eval_modalities(model)
    batches = eval_batches(
        cache, split, chunk_frames=chunk_frames, videos_per_batch=videos_per_batch,
        with_audio="audio" in reads, missing_face=missing_face, audio_window_s=audio_window_s,
        video_ids=video_ids, physio=physio if "physio" in reads else None, frame_arrays=feature_arrays,
    )  # fmt: skip
    parts: list[dict[str, list[np.ndarray]]] = [{} for _ in range(max(members, 1))]
    # The step returns its carry placed on the variables' mesh; a fresh zero carry, uncommitted, is another
    # input sharding to jit, which compiled the whole step a second time for the chunks after the first
    # (the teacher's population eval: a second 14 s compile). Placed like the variables, it is compiled once.
    leaf = jax.tree.leaves(variables)[0]
    placement = leaf.sharding if isinstance(leaf, jax.Array) else None
    if not isinstance(placement, jax.sharding.NamedSharding):
        placement = None  # not on a mesh: the step's outputs are not committed either
    carry = None
    for batch in batches:
        if batch["first_chunk"]:
            carry = model.zero_carry(videos_per_batch)
            if members:
                carry = jax.tree.map(lambda x: jnp.broadcast_to(x, (members, *x.shape)), carry)
            if placement is not None:
                carry = jax.device_put(carry, placement)
        inputs = {k: batch[k] for k in ("frames", "audio", "physio", *FEATURE_KEYS) if k in batch}
        pred, _, carry = stream_step(variables, inputs, carry)
        pred = np.asarray(pred) if members else np.asarray(pred)[None]
        for lane, vid in enumerate(batch["video_id"]):
            keep = batch["frame_mask"][lane] > 0
            if vid and keep.any():
                for member, found in enumerate(parts):
                    found.setdefault(str(vid), []).append(pred[member, lane][keep])
    return [{vid: np.concatenate(p) for vid, p in found.items()} for found in parts]


def predict_windows(
    model: Network,
    variables: Any,
    cache: Cache,
    split: str,
    config: ml_collections.ConfigDict,
    *,
    dtype: DTypeLike = jnp.float32,
    video_ids: list[str] | None = None,
    members: int = 0,
) -> list[dict[str, np.ndarray]]:
    """Per-frame predictions [T, targets] of every video of `split` in the strong setting's windows.

    Windows tile each video from frame 0 (`eval_windows`), each from a zero recurrent state as in
    training; a sub-sequence's prediction (made for its last frame) is given to all of its frames, so
    every frame of the video gets exactly one prediction and CCC runs over all of them. One dict per
    member: `members` > 0 maps over variables stacked on a leading axis of that size, 0 is one model.
    """
    reads = eval_modalities(model)
    pipeline = build.pipeline_config(
        config,
        batch_size=config.data.eval_windows_per_batch,
        with_audio="audio" in reads,
        with_physio="physio" in reads,
        train=False,
    )

    def predict(v: Any, b: Any) -> Any:
        return model.apply(v, *model_inputs(model, b, dtype), train=False)[0]

    apply = jax.jit(over_members(predict, in_axes=(0, None)) if members else predict)
    sub = pipeline.subsequence_frames
    preds: list[dict[str, np.ndarray]] = [{} for _ in range(max(members, 1))]
    for batch in eval_windows(
        cache, split, pipeline, windows_per_batch=pipeline.batch_size, video_ids=video_ids
    ):
        inputs = {k: batch[k] for k in ("frames", "audio", "physio") if k in batch}
        pred = np.asarray(apply(variables, inputs))
        pred = pred if members else pred[None]
        for lane, vid in enumerate(batch["video_id"]):
            if not vid:
                continue
            n = cache.video(str(vid)).num_frames
            for member, found in enumerate(preds):
                out = found.setdefault(str(vid), np.zeros((n, pred.shape[-1]), np.float32))
                for j in range(pred.shape[2]):
                    first = int(batch["window_start"][lane]) + j * sub
                    if first < n:
                        out[first : first + sub] = pred[member, lane, j]
    return preds


def evaluate(
    model: Network,
    variables: Any,
    cache: Cache,
    config: ml_collections.ConfigDict,
    *,
    split: str = "dev",
    targets: tuple[int, ...] = (0, 1),
    dtype: DTypeLike = jnp.float32,
    predictions_dir: str | Path | None = None,
    stream_step: Any = None,
    feature_arrays: FeatureArrays | None = None,
) -> dict[str, Any]:
    """CCC per video, mean over videos and over all frames concatenated, for each target.

    Returns `{"raw": {...}, "postprocessed": {...} (only with config.eval.postprocess),
    "mean_ccc": float, "score": str}`, where `mean_ccc` (raw, averaged over targets) is the number model
    selection uses: of the mean over videos (RECOLA) or of the CCC over all frames concatenated
    (Aff-Wild2), as `config.eval.score` says. Strong-setting configs (windows) predict with
    `predict_windows`. Writes one CSV per video to `predictions_dir` when given. `feature_arrays`:
    frozen trunks' cached features of the split's videos, read instead of running the trunk (weak
    setting; the same predictions to float rounding).
    """
    return evaluate_population(
        model, variables, cache, config, members=0, split=split, targets=targets, dtype=dtype,
        predictions_dirs=[predictions_dir], stream_step=stream_step, feature_arrays=feature_arrays,
    )[0]  # fmt: skip


def evaluate_population(
    model: Network,
    variables: Any,
    cache: Cache,
    config: ml_collections.ConfigDict,
    *,
    members: int,
    split: str = "dev",
    targets: tuple[int, ...] = (0, 1),
    dtype: DTypeLike = jnp.float32,
    predictions_dirs: list[str | Path | None] | None = None,
    stream_step: Any = None,
    feature_arrays: FeatureArrays | None = None,
) -> list[dict[str, Any]]:
    """`evaluate` of every member of a population (variables stacked over `members` leading rows; 0
    for one model) from one pass over the videos; `predictions_dirs[m]` as `predictions_dir`."""
    if build.is_windowed(config):
        preds = predict_windows(model, variables, cache, split, config, dtype=dtype, members=members)
    else:
        preds = predict_population(
            model, variables, cache, split, members=members,
            chunk_frames=config.data.eval_chunk_frames, videos_per_batch=config.data.eval_videos_per_batch,
            missing_face=config.data.missing_face, audio_window_s=config.data.audio_window_s,
            dtype=dtype, stream_step=stream_step, physio=build.physio_pipeline(config),
            feature_arrays=feature_arrays,
        )  # fmt: skip
    dirs = predictions_dirs or [None] * len(preds)
    return [score(p, cache, config, targets, d) for p, d in zip(preds, dirs, strict=True)]


def score(
    preds: dict[str, np.ndarray],
    cache: Cache,
    config: ml_collections.ConfigDict,
    targets: tuple[int, ...],
    predictions_dir: str | Path | None = None,
) -> dict[str, Any]:
    """`evaluate`'s result for one model's predictions (and its CSVs when `predictions_dir` is given)."""
    names = tuple(TARGETS[i] for i in targets)
    labels = {v: np.asarray(cache.video(v).labels)[:, list(targets)] for v in preds}
    masks = {v: np.asarray(cache.video(v).label_mask) for v in preds}
    raw = metrics.evaluate_videos(preds, labels, masks, target_names=names)
    scope = config.eval.score  # "mean_over_videos" (RECOLA) or "concatenated" (Aff-Wild2)
    result: dict[str, Any] = {
        "raw": raw,
        "mean_ccc": float(np.mean(list(raw[scope].values()))),
        "score": scope,
    }
    if config.eval.postprocess:
        post = metrics.PostProcessing.released_code()
        result["postprocessed"] = metrics.evaluate_videos(preds, labels, masks, target_names=names, post=post)
    if predictions_dir is not None:
        write_prediction_csvs(predictions_dir, preds, labels, names)
    return result


def write_prediction_csvs(
    directory: str | Path, preds: dict[str, np.ndarray], labels: dict[str, np.ndarray], names: tuple[str, ...]
) -> None:
    """`<video>.csv` with frame, time_s, the prediction and the gold label of every target."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for vid, pred in preds.items():
        with open(directory / f"{vid}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["frame", "time_s", *[f"pred_{n}" for n in names], *[f"gold_{n}" for n in names]])
            for t in range(len(pred)):
                writer.writerow(
                    [
                        t,
                        f"{t / 25:.2f}",
                        *[f"{x:.5f}" for x in pred[t]],
                        *[f"{x:.5f}" for x in labels[vid][t]],
                    ]
                )
