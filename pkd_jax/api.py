"""Training and inspecting pkd_jax models from Python (notebooks, scripts), without command-line flags.

    from pkd_jax import api, defaults, losses

    config = defaults.get_config("student", "synthetic")
    config.data.root, config.teacher.workdir = "corpus", "runs/teacher"
    api.train(config, "runs/student", loss=losses.compose(gate="none"))  # loss: optional
    dev = api.predict_dev(api.load("runs/student"))  # {video: pred, labels, label_mask, face_found}

`train` runs the same `pkd_jax.train.loop.run` as `python -m pkd_jax.main`; a `loss` replaces the
config's own and is recorded by name (`module:qualname`) in the workdir's config.json as `loss.custom`,
so a resumed run must pass the same one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from pkd_jax import defaults, metrics
from pkd_jax.config import build
from pkd_jax.data.cache import Cache
from pkd_jax.train import loop
from pkd_jax.train.evaluate import predict_videos
from pkd_jax.workdir.trained import Trained, load_trained

LossFn = Callable[[Any, Any], tuple[Any, dict[str, Any]]]


def train(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    loss: LossFn | None = None,
    allow_config_change: bool = False,
) -> dict[str, Any]:
    """Trains `config.stage` in `workdir` (resuming from its latest checkpoint); returns the last dev eval.

    Args:
      config: A training config, locked or not (`pkd_jax.defaults.get_config(stage, dataset)` and its
        helpers, or a `configs/` file); an unlocked one is checked for fields pkd_jax does not know.
      workdir: Where checkpoints, metrics, predictions and config.json go.
      loss: Optional `loss(outputs, batch) -> (loss, metrics)` replacing the config's own, e.g. a
        `pkd_jax.losses.compose(...)` result. `outputs` has the model's `pred` [B, T, K] and `emb`
        (and a student's `teacher_pred`, `teacher_emb`); `batch` has `labels` [B, T, K], `label_mask`,
        `frame_mask` and, for a student with the window gate, `gate_gamma` [B]. Metrics are scalars;
        `loss` is added to them when missing.
      allow_config_change: Resume a workdir whose checkpoints were trained with other data, loss or
        optimizer settings, recording the changes in its `config_amendments.jsonl` (see
        `pkd_jax.workdir.config_record`); without it such a resume is an error listing the fields.

    Returns:
      The last dev evaluation (`{"raw", "mean_ccc", "score", ...}`); empty when the workdir had already
      trained `config.train.num_steps` steps (its eval.json holds that evaluation).

    Raises:
      ValueError: for an unknown config field, an invalid config, or a workdir whose checkpoints were
        trained with another loss or config than the one given.
      WorkdirInUseError: when another run holds the workdir.
    """
    if not isinstance(config, ml_collections.ConfigDict):
        raise TypeError(f"config must be an ml_collections.ConfigDict, not {type(config).__name__}")
    if loss is not None and not callable(loss):
        raise TypeError(f"loss must be a function (outputs, batch) -> (loss, metrics), not {loss!r}")
    unknown = sorted(set(_field_names(config.to_dict())) - set(_field_names(_defaults_of(config))))
    if unknown:
        raise ValueError(
            f"unknown config field(s) {unknown} (a typo?); pkd_jax.defaults.get_config lists every field"
        )
    return loop.run(config, workdir, loss_fn=loss, allow_config_change=allow_config_change)


def load(workdir: str | Path, checkpoint: int | None = None) -> Trained:
    """The trained network of `workdir`: config, model, numpy variables and step, in one call.

    `checkpoint` is a step of the workdir (`<workdir>/checkpoints/<step>`); None: the best by dev CCC.
    Weak-setting (per-frame) models only, like `pkd_jax.predict`.
    """
    if checkpoint is None:
        return load_trained(workdir=workdir)
    return load_trained(checkpoint=Path(workdir) / "checkpoints" / str(int(checkpoint)))


@dataclasses.dataclass(frozen=True)
class VideoPrediction:
    """One video's predictions next to its gold standard, frame by frame.

    Attributes:
      pred: The model's predictions, float32 [T, K] (K = len(targets)).
      labels: The gold standard of the same targets, [T, K].
      label_mask: True where the label counts (Aff-Wild2's -5 and similar are False), [T].
      face_found: True where preprocessing found a face (elsewhere `data.missing_face` applied), [T].
      targets: The target names, e.g. ("valence", "arousal").
      fps: Frames per second of the cache, for a time axis (`np.arange(T) / fps`).
    """

    pred: np.ndarray
    labels: np.ndarray
    label_mask: np.ndarray
    face_found: np.ndarray
    targets: tuple[str, ...]
    fps: float

    def ccc(self) -> dict[str, float]:
        """CCC of the prediction against the labels per target, over the valid frames."""
        return {
            name: metrics.ccc_np(self.pred[:, k], self.labels[:, k], self.label_mask)
            for k, name in enumerate(self.targets)
        }


def predict_dev(
    trained_or_workdir: Trained | str | Path, *, split: str = "dev", cache: str | Path | Cache | None = None
) -> dict[str, VideoPrediction]:
    """The model run on every cached video of `split`, each in one continuous pass, as in evaluation.

    Args:
      trained_or_workdir: `load`'s result, or a workdir to load (its best checkpoint).
      split: "dev", "train" or "test".
      cache: The feature cache; None: the one the training config names (`data.cache` or `data.root`).

    Returns:
      `{video_id: VideoPrediction}` in the cache's order.
    """
    trained = trained_or_workdir if isinstance(trained_or_workdir, Trained) else load(trained_or_workdir)
    config = trained.config
    if not isinstance(cache, Cache):
        directory = cache or build.cache_dir(config)
        if directory is None:
            raise ValueError("the trained config names no feature cache: pass cache=DIR")
        cache = Cache(directory)
    ids = cache.ids(split)
    if not ids:
        splits = sorted({cache.manifest["videos"][v]["split"] for v in cache.ids()})
        raise ValueError(f"the cache at {cache.root} has no {split!r} videos; it has {splits}")
    preds = predict_videos(
        trained.model, trained.variables, cache, split,
        chunk_frames=config.data.eval_chunk_frames, videos_per_batch=config.data.eval_videos_per_batch,
        missing_face=config.data.missing_face, audio_window_s=config.data.audio_window_s,
        dtype=build.compute_dtype(config), video_ids=ids,
    )  # fmt: skip
    columns = list(build.target_indices(config))
    fps = float(cache.config.get("fps", 25))
    out = {}
    for vid in ids:
        video = cache.video(vid)
        out[vid] = VideoPrediction(
            pred=np.asarray(preds[vid], np.float32),
            labels=np.asarray(video.labels, np.float32)[:, columns],
            label_mask=np.asarray(video.label_mask) > 0,
            face_found=np.asarray(video.face_found) > 0,
            targets=trained.targets,
            fps=fps,
        )
    return out


def dev_scores(workdir: str | Path) -> dict[str, float]:
    """Raw dev CCC per target of a finished run (its `eval.json`, the mean over videos or the score the
    config names), e.g. `{"valence": 0.41, "arousal": 0.55}`."""
    path = Path(workdir) / "eval.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the run in {workdir} has not finished")
    result = json.loads(path.read_text())
    return dict(result["raw"][result.get("score", "mean_over_videos")])


def _defaults_of(config: ml_collections.ConfigDict) -> dict[str, Any]:
    stage = config.get("stage", "")
    if stage not in defaults.STAGES:
        raise ValueError(f"config.stage={stage!r}; choose one of {defaults.STAGES}")
    return defaults.get_config(stage, config.data.get("dataset", "recola")).to_dict()


def _field_names(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of every leaf field of a nested config dict."""
    names = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        names += _field_names(value, f"{name}.") if isinstance(value, dict) else [name]
    return names
