"""The trunk-feature cache: a frozen trunk's output for every frame of the corpus, computed once.

A frozen trunk (`model.freeze_visual_cnn`, `model.freeze_audio_cnn`) runs in inference mode and is never
updated, so its output on a frame depends only on the frame and the trunk's weights. With
`model.frozen_features="cached"` it is computed once per corpus and weights and stored next to the
feature cache; the train step then runs only the recurrent layer and the heads on it.

Layout, one directory per trunk, weights and settings:

    <cache>/trunk_features/<group>-<key>/manifest.json   trunk, weights digest, settings, corpus, videos
    <cache>/trunk_features/<group>-<key>/<video>.npy     float32 [T, D]

`key` hashes the trunk's name, the digest of its weights (parameters and BatchNorm statistics, by content:
`pkd_jax.cached.tree_digest`) and the settings its input depends on (face size, missing-face policy, dtype,
audio window, the strong setting's clip sampling), so another trunk or setting gets its own directory.
The manifest also records the corpus (a digest of the cache's manifest and the size and time of every
array the features were read from): a re-preprocessed cache makes the stored features stale, and they are
recomputed with a warning. Directories keyed before the weights were hashed by `tree_digest` are not
found under the new key: their features are computed once more (the old directory can be deleted).

Row t of a video's array is the trunk's output on the input the pipeline builds for time index t: in the
weak setting frame t under the missing-face policy, or its 1-second audio window; with windows (strong
setting) the clip of the sub-sequence starting at frame t, or its audio window (`FrameReader.read_window`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import jax
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from pkd_jax.cached import fingerprint, save_npy_atomic, tree_digest, write_text_atomic
from pkd_jax.config import build
from pkd_jax.data.cache import Cache, CacheError
from pkd_jax.data.pipeline import FrameReader, PipelineConfig
from pkd_jax.models import Network
from pkd_jax.models.inputs import trunk_input

VERSION = 1
BATCH_KEYS = {"visual_cnn": "visual_features", "audio_cnn": "audio_features"}
_METHODS = {"visual_cnn": "trunk_visual", "audio_cnn": "trunk_audio"}


class TrunkFeatureError(CacheError):
    """Stored trunk features that contradict their key or a checkpoint's trunk; the message names them."""


def weights_digest(variables: dict[str, Any], group: str) -> str:
    """sha256 of a trunk's parameters and BatchNorm statistics by content (paths, dtypes, shapes, bytes)."""
    trunk = {c: variables[c][group] for c in ("params", "batch_stats") if group in variables.get(c, {})}
    return tree_digest(trunk)


def trunk_name(config: ml_collections.ConfigDict, group: str) -> str:
    """The architecture behind a parameter group, with its width."""
    m = config.model
    if group == "audio_cnn":
        return f"resnet18@{m.audio_width}"
    if m.visual_trunk == "r3d18":
        return f"r3d18@{m.r3d_width}"
    return f"vgg19_bn@{m.vgg_width}:{m.visual_features}"


def feature_settings(config: ml_collections.ConfigDict, group: str) -> dict[str, Any]:
    """The data and compute settings a trunk's input and output depend on."""
    d = config.data
    settings: dict[str, Any] = {"dtype": config.model.dtype, "windows": build.window_fields(config)}
    if group == "visual_cnn":
        settings.update(face_size=d.face_size, missing_face=d.missing_face)
        if build.is_windowed(config):
            settings["clip_frames"] = d.clip_frames
    else:
        settings["audio_window_s"] = d.audio_window_s
    return settings


def corpus_fingerprint(cache: Cache, video_ids: Iterable[str]) -> str:
    """The cache's manifest and the size and modification time of every video's arrays.

    The arrays go in by size and time, not by their bytes: hashing every frame of a corpus (tens of GB for
    Aff-Wild2) at each start would cost minutes, while preprocessing rewrites them, which changes both.
    The manifest, which records each video's facts and the audio statistics, goes in by content.
    """
    stats = []
    for video_id in sorted(video_ids):
        for name in ("frames", "face_found", "logmel"):
            stat = (Path(cache.root) / "videos" / video_id / f"{name}.npy").stat()
            stats.append([video_id, name, stat.st_size, stat.st_mtime_ns])
    return fingerprint("corpus", (Path(cache.root) / "manifest.json").read_bytes(), stats)


def feature_directory(cache: Cache, group: str, trunk: str, digest: str, settings: dict[str, Any]) -> Path:
    """Where the features of this trunk, weights and settings live."""
    key = fingerprint("trunk features", {"trunk": trunk, "weights": digest, "settings": settings})
    return Path(cache.root) / "trunk_features" / f"{group}-{key[:16]}"


def trunk_inputs(reader: FrameReader, video_id: str, index: np.ndarray, group: str) -> np.ndarray:
    """The inputs of trunk `group` at time indices `index` of one video, as the pipeline builds them:
    frames (uint8 [N, S, S, 3]; windows: the sub-sequence's clip [N, C, S, S, 3]) or audio windows."""
    video = reader.cache.video(video_id)
    n, config = video.num_frames, reader.config
    if group == "visual_cnn" and config.subsequences:  # the clip of the sub-sequence starting at t
        clips = np.minimum(index[:, None] + config.clip_offsets()[None, :], n - 1)
        return reader.frames(video, clips.reshape(-1)).reshape(*clips.shape, *video.frames.shape[1:])
    if group == "visual_cnn":
        return reader.frames(video, index)
    if config.subsequences:  # the audio window centred on the sub-sequence starting at t
        centre = index * reader.mel_per_frame + config.subsequence_frames * reader.mel_per_frame // 2
        return reader.audio_at(video, centre)
    return reader.audio(video, index)


def trunk_reader(config: ml_collections.ConfigDict, cache: Cache, group: str) -> FrameReader:
    """A reader that builds a trunk's inputs with the config's data settings."""
    pipeline = PipelineConfig(
        clip_frames=config.data.clip_frames, missing_face=config.data.missing_face,
        with_audio=group == "audio_cnn", audio_window_s=config.data.audio_window_s,
        **build.window_fields(config),
    )  # fmt: skip
    return FrameReader(cache, pipeline)


def compute_video_features(
    apply_trunk: Callable[[np.ndarray], np.ndarray],
    reader: FrameReader,
    video_id: str,
    group: str,
    *,
    chunk: int,
) -> np.ndarray:
    """float32 [T, D]: `apply_trunk` on the inputs of every time index of one video, `chunk` at a time
    (the last chunk padded, so the trunk compiles once)."""
    n = reader.cache.video(video_id).num_frames
    parts = []
    for first in range(0, n, chunk):
        index = np.arange(first, min(first + chunk, n))
        inputs = trunk_inputs(reader, video_id, index, group)
        padded = np.concatenate([inputs, np.zeros((chunk - len(index), *inputs.shape[1:]), inputs.dtype)])
        parts.append(np.asarray(apply_trunk(padded[None]), np.float32)[0, : len(index)])
    return np.concatenate(parts)


def _trunk_fn(model: Network, variables: Any, group: str, dtype: Any) -> Callable:
    method = _METHODS[group]

    @jax.jit
    def apply(v: Any, x: jax.Array) -> jax.Array:
        out = model.apply(v, trunk_input(group, x, dtype), train=False, method=method)
        return cast(jax.Array, out)  # no `mutable`: the output alone

    return lambda x: apply(variables, x)


def load_or_compute(
    config: ml_collections.ConfigDict,
    model: Network,
    variables: dict[str, Any],
    cache: Cache,
    group: str,
    *,
    splits: tuple[str, ...] = ("train",),
    chunk: int = 64,
) -> tuple[dict[str, np.ndarray], str]:
    """The frozen trunk `group`'s features of every video of `splits` ({video: float32 [T, D]}, memory-
    mapped), and the weights digest they belong to. Videos not stored yet are computed and stored;
    stored features of another corpus state are recomputed with a warning.
    """
    digest = weights_digest(variables, group)
    trunk, settings = trunk_name(config, group), feature_settings(config, group)
    directory = feature_directory(cache, group, trunk, digest, settings)
    video_ids = [v for split in splits for v in cache.ids(split)]
    corpus = corpus_fingerprint(cache, cache.ids())
    manifest = _read_manifest(directory)
    if manifest is not None:
        if (manifest.get("trunk"), manifest.get("weights_digest"), manifest.get("settings")) != (
            trunk, digest, json.loads(json.dumps(settings)),
        ):  # fmt: skip
            raise TrunkFeatureError(
                f"{directory / 'manifest.json'}: its trunk, weights or settings are not the ones its "
                "directory name stands for (edited or copied by hand?); delete the directory to recompute"
            )
        if manifest.get("corpus") != corpus:
            logging.warning(
                "Trunk features in %s were computed from another state of the feature cache %s "
                "(re-preprocessed?): recomputing them.", directory, cache.root,
            )  # fmt: skip
            shutil.rmtree(directory, ignore_errors=True)
            manifest = None
    if manifest is None:
        manifest = {"version": VERSION, "group": group, "trunk": trunk, "weights_digest": digest,
                    "settings": settings, "corpus": corpus, "videos": {}}  # fmt: skip
    missing = [v for v in video_ids if v not in manifest["videos"]]
    if missing:
        logging.info("Computing %s features of %d videos into %s.", group, len(missing), directory)
        directory.mkdir(parents=True, exist_ok=True)
        reader = trunk_reader(config, cache, group)
        apply_trunk = _trunk_fn(model, variables, group, build.compute_dtype(config))
        for video_id in tqdm(
            missing, desc=f"{group} features", unit="video", disable=jax.process_index() != 0
        ):
            features = compute_video_features(apply_trunk, reader, video_id, group, chunk=chunk)
            save_npy_atomic(directory / f"{video_id}.npy", features)
            manifest["videos"][video_id] = {
                "split": cache.video(video_id).split,
                "shape": list(features.shape),
            }
        text = json.dumps(manifest, indent=1, sort_keys=True)
        write_text_atomic(directory / "manifest.json", text)
    else:
        logging.info("Reusing the %s features in %s.", group, directory)
    return {v: _load(directory, v, manifest["videos"][v]["shape"]) for v in video_ids}, digest


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    path = directory / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TrunkFeatureError(f"{path}: not valid JSON ({e}); delete {directory} to recompute") from e
    if manifest.get("version") != VERSION:
        logging.warning(
            "%s: version %s, this pkd_jax writes %d; recomputing.", path, manifest.get("version"), VERSION
        )
        shutil.rmtree(directory, ignore_errors=True)
        return None
    return manifest


def _load(directory: Path, video_id: str, shape: list[int]) -> np.ndarray:
    path = directory / f"{video_id}.npy"
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise TrunkFeatureError(
            f"{path}: unreadable trunk features ({e}); delete {directory} to recompute"
        ) from e
    if list(array.shape) != shape or array.dtype != np.float32:
        raise TrunkFeatureError(f"{path}: {array.dtype} {array.shape}, its manifest says float32 {shape}")
    return array


def frozen_feature_arrays(
    config: ml_collections.ConfigDict,
    model: Network,
    variables: dict[str, Any],
    cache: Cache,
    *,
    splits: tuple[str, ...] = ("train",),
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str]]:
    """The batch arrays of every cached frozen trunk of the config (`build.cached_trunks`):
    ({"visual_features": {video: [T, D]}, ...}, {group: weights digest})."""
    arrays, digests = {}, {}
    for group in build.cached_trunks(config):
        arrays[BATCH_KEYS[group]], digests[group] = load_or_compute(
            config, model, variables, cache, group, splits=splits
        )
    return arrays, digests


def check_restored_trunks(digests: dict[str, str], variables: dict[str, Any], workdir: Path) -> None:
    """The restored checkpoint's frozen trunks must be the ones the cached features came from."""
    for group, digest in digests.items():
        if weights_digest(variables, group) != digest:
            raise TrunkFeatureError(
                f"{workdir}: the checkpoint's frozen {group} differs from the one this run initialised "
                "and cached features for (was config.pretrained's file replaced?); resume with the "
                "original weights, or train in a new workdir"
            )
