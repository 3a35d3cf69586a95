"""`setup(config, workdir) -> Run`: everything one training run needs, built in one documented order.

1. The config record: the config (with a user loss named in it) is written to, or checked against, the
   workdir's config.json (`pkd_jax.workdir.config_record`).
2. The feature cache, preprocessing the corpus on first use (`feature_cache.open_feature_cache`).
3. A student's frozen teachers, always a tuple: loaded, their outputs cached in the cached mode, their
   gates prepared (`teachers.prepare_teachers`).
4. The network's variables: initialised from the seed, pretrained trunks loaded, untrained frozen
   BatchNorm calibrated, frozen trunks' features cached (`pkd_jax.precompute`).
5. The input pipeline, the optimizer and the train state, replicated over the device mesh.
6. The loss and the jitted train and evaluation steps.
7. The newest readable checkpoint restored, state and input iterator together, and the metric writer.

`pkd_jax.train.loop.train(run)` then runs the loop. A `Run` can also be put together by hand (a test
does, in memory): the loop uses only its config, state, batches, step and evaluation functions,
checkpointer and writer.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import jax
import ml_collections
import numpy as np
from absl import logging

from pkd_jax import console, losses
from pkd_jax.config import build
from pkd_jax.data.cache import Cache
from pkd_jax.data.labelled import (
    describe,
    labelled_flags,
    labelled_recordings,
    stream_recordings,
    unlabelled_recordings,
)  # fmt: skip
from pkd_jax.data.pipeline import train_dataset
from pkd_jax.models import Network
from pkd_jax.precompute import frozen_bn, trunk_features
from pkd_jax.provenance import provenance
from pkd_jax.train import sharding
from pkd_jax.train.evaluate import evaluate
from pkd_jax.train.feature_cache import open_feature_cache
from pkd_jax.train.state import TrainState, create_state, make_optimizer, parameter_counts
from pkd_jax.train.steps import Batch, Metrics, make_stream_step, make_train_step
from pkd_jax.train.teachers import Teachers, prepare_teachers
from pkd_jax.workdir.checkpoints import Checkpointer, restore_newest
from pkd_jax.workdir.config_record import record_config, with_loss
from pkd_jax.workdir.metric_writer import MetricWriter
from pkd_jax.workdir.model_card import write_model_card


class Saver(Protocol):
    """What the loop needs of a checkpointer (`pkd_jax.workdir.checkpoints.Checkpointer`)."""

    def save(
        self, step: int, state: Any, data_iterator: Any = None, *, dev_ccc: float | None = None
    ) -> None: ...

    def close(self) -> None: ...


class Writer(Protocol):
    """What the loop needs of a metric writer (`pkd_jax.workdir.metric_writer.MetricWriter`)."""

    def write(self, step: int, scalars: dict[str, Any], *, kind: str = "train") -> None: ...

    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run, ready for the loop.

    Attributes:
      config: The run's config (`train.*` drives the loop).
      workdir: Where checkpoints, metrics, predictions and the profile go.
      model: The network being trained.
      state: The train state to start from (fresh or restored), replicated over the mesh.
      start_step: The step `state` is at.
      batches: The training input stream; its position is saved with every checkpoint.
      train_step: `(state, host batch) -> (state, device metrics)`, sharding included.
      evaluate: `(state, step) -> dev evaluation` (`pkd_jax.train.evaluate.evaluate`'s result).
      finish: `(state, step, last dev evaluation) -> None`, after the last step: final evaluations of
        `eval.final_splits`, the model card and eval.json, which marks the run finished.
      checkpointer: Saves the state and the input position.
      writer: Records train and eval metrics.
      chief: Whether this process writes files and shows progress (process 0).
      mesh, cache, teachers: What the steps were built over (None / empty for a run made by hand).
      step_for: `thetas -> pure train step(state, batch, teacher variables)`, the gates' thresholds
        as inputs, for a population to map over its members (`pkd_jax.train.population`).
      eval_features: Frozen trunks' cached features of the evaluated splits, when evaluation reads them
        (`eval_feature_arrays`), and `trunk_digests` the weights digests of the trunks they came from.
    """

    config: ml_collections.ConfigDict
    workdir: Path
    model: Network
    state: TrainState
    start_step: int
    batches: Iterator[Batch]
    train_step: Callable[[TrainState, Batch], tuple[TrainState, Metrics]]
    evaluate: Callable[[TrainState, int], dict[str, Any]]
    finish: Callable[[TrainState, int, dict[str, Any]], None]
    checkpointer: Saver
    writer: Writer
    chief: bool = True
    mesh: jax.sharding.Mesh | None = None
    cache: Cache | None = None
    teachers: Teachers = dataclasses.field(default_factory=Teachers)
    step_for: Callable[[tuple[Any, ...]], Callable[..., tuple[TrainState, Metrics]]] | None = None
    eval_features: dict[str, dict[str, np.ndarray]] | None = None
    trunk_digests: dict[str, str] = dataclasses.field(default_factory=dict)


def setup(
    config: ml_collections.ConfigDict,
    workdir: Path,
    *,
    loss_fn: losses.LossFn | None = None,
    allow_config_change: bool = False,
    extra_checkpoints: int = 0,
) -> Run:
    """Builds the run of `config.stage` in `workdir` (the caller holds the workdir's lock).

    `loss_fn(outputs, batch) -> (loss, metrics)` replaces the config's loss (`build.build_loss`); it is
    recorded by name in config.json as `loss.custom`. A resumed run's config must match the recorded
    one except where `allow_config_change` lets it differ (`pkd_jax.workdir.config_record`).
    `extra_checkpoints` are kept beyond `train.keep_latest` (a population member keeps one more).
    """
    chief = jax.process_index() == 0
    config = with_loss(config, workdir, loss_fn)
    record_config(config, workdir, allow_change=allow_config_change, write=chief)
    mesh = sharding.make_mesh()
    cache = open_feature_cache(config)
    # Checked before the teachers' long precomputation; None: every training recording is labelled.
    labelled = labelled_recordings(config, cache)
    if labelled is not None:
        console.say(str(describe(config, cache)), to_console=chief)
    stream_ids = stream_recordings(config, cache)
    unlabelled_ids, unlabelled_clips = unlabelled_recordings(config, cache)  # a student's second stream
    targets, dtype = build.target_indices(config), build.compute_dtype(config)
    teacher_mode = config.teacher.mode if config.stage == "student" else None
    teachers = Teachers()
    if teacher_mode in ("online", "cached"):
        teachers = prepare_teachers(config, workdir, cache, mesh, dtype=dtype, chief=chief)

    model = build.build_model(config)
    reads = step_modalities(config, teachers)
    # Frozen trunks with cached features: the batch carries their features instead of their inputs (an
    # online teacher still needs frames and audio).
    cached_trunks = build.cached_trunks(config)
    pipeline = build.pipeline_config(
        config,
        batch_size=sharding.per_process_batch_size(config.data.batch_size, mesh),
        with_audio="audio" in reads and ("audio_cnn" not in cached_trunks or teacher_mode == "online"),
        with_frames="visual_cnn" not in cached_trunks or teacher_mode == "online",
        with_physio="physio" in reads,
        train=True,
    )
    example = train_dataset(
        cache,
        dataclasses.replace(pipeline, with_frames=True, with_audio="audio" in reads),
        video_ids=stream_ids,
    )[0]
    variables = build.init_variables(model, example, config.seed)
    variables = load_pretrained(config, variables)
    variables = frozen_bn.calibrate_untrained(config, model, variables, cache)
    frame_arrays, trunk_digests = trunk_features.frozen_feature_arrays(config, model, variables, cache)
    eval_features = eval_feature_arrays(config, model, variables, cache, teacher_mode)

    extra_arrays = dict(teachers.extra_arrays)
    if labelled is not None and config.stage == "student":  # each clip's flag: supervised or not
        extra_arrays |= labelled_flags(cache, labelled)
    unlabelled_per_process = sharding.per_process_batch_size(
        unlabelled_clips, mesh, "config.data.unlabelled_batch_size"
    )
    dataset = train_dataset(
        cache, pipeline, shard_index=jax.process_index(), shard_count=jax.process_count(),
        extra_arrays=extra_arrays or None, frame_arrays=frame_arrays or None, video_ids=stream_ids,
        unlabelled_ids=unlabelled_ids, unlabelled_batch_size=unlabelled_per_process,
    )  # fmt: skip
    tx = make_optimizer(
        config.optim, variables["params"], steps_per_epoch=steps_per_epoch(config, cache, stream_ids),
        total_steps=config.train.num_steps, frozen_groups=build.frozen_trunks(config),
    )  # fmt: skip
    state_rng = jax.random.key(config.seed)  # dropout keys: folded with the step number
    state = sharding.replicate(create_state(variables, tx, state_rng), mesh)

    def step_for(thetas: tuple[Any, ...]) -> Callable[[TrainState, Batch, Any], tuple[TrainState, Metrics]]:
        """The pure train step with the gates' thresholds `thetas` (numbers, or traced per member)."""
        return make_train_step(
            model, tx, loss_fn or build.build_loss(config, thetas=thetas), targets=targets, dtype=dtype,
            teachers=teachers.models, teacher_mode=teacher_mode, warmup_steps=config.teacher.warmup_steps,
            teacher_loss_fn=losses.compose(ccc=config.loss.ccc, distill=None) if teacher_mode == "joint" else None,
        )  # fmt: skip

    jitted_step = jax.jit(step_for(teachers.thetas), donate_argnums=0)
    stream_step = jax.jit(make_stream_step(model, dtype))

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        return jitted_step(state, sharding.shard_batch(batch, mesh), teachers.variables)

    def dev_evaluation(state: TrainState, step: int) -> dict[str, Any]:
        # Every process evaluates the whole dev set on its own first device; process 0 writes.
        save = config.eval.save_predictions and chief
        return evaluate(
            model, sharding.local_view(state.variables), cache, config, targets=targets, dtype=dtype,
            stream_step=stream_step, predictions_dir=workdir / "predictions" / str(step) if save else None,
            feature_arrays=eval_features,
        )  # fmt: skip

    def finish(state: TrainState, step: int, last_eval: dict[str, Any]) -> None:
        finals = final_evaluations(
            config, model, state, cache, workdir, targets, dtype, stream_step, eval_features
        )
        if chief:
            write_finished(
                config, workdir, cache, teachers, state.variables["params"], step, last_eval, finals
            )

    batches = iter(dataset.to_iter_dataset(grain_read_options()))
    open_checkpointer = functools.partial(
        Checkpointer,
        workdir / "checkpoints",
        keep_latest=config.train.keep_latest + extra_checkpoints,
        keep_best=config.train.keep_best,
    )
    state, start, checkpointer = restore_newest(open_checkpointer, state, batches)
    if start:
        logging.info("Resumed from step %d.", start)
        trunk_features.check_restored_trunks(trunk_digests, sharding.local_view(state.variables), workdir)
    log_summary(config, model, variables, mesh, cache, start, workdir)
    return Run(
        config=config, workdir=workdir, model=model, state=state, start_step=start, batches=batches,
        train_step=train_step, evaluate=dev_evaluation, finish=finish, checkpointer=checkpointer,
        writer=MetricWriter(workdir, resume_step=start), chief=chief, mesh=mesh, cache=cache, teachers=teachers,
        step_for=step_for, eval_features=eval_features, trunk_digests=trunk_digests,
    )  # fmt: skip


def write_finished(
    config: ml_collections.ConfigDict,
    workdir: Path,
    cache: Cache,
    teachers: Teachers,
    params: Any,
    step: int,
    last_eval: dict[str, Any],
    finals: dict[str, dict[str, Any]],
) -> None:
    """The model card, then eval.json (the last dev evaluation with what produced it), which marks the
    run finished; nothing without a dev evaluation."""
    if not last_eval:
        return
    record = {**last_eval, "provenance": provenance()}
    write_model_card(
        workdir, config, {"dev": last_eval, **finals}, cache, record["provenance"], step=step, params=params,
        teacher_source=teachers.source or None,
    )  # fmt: skip
    (workdir / "eval.json").write_text(json.dumps(record, indent=2))


def eval_feature_arrays(
    config: ml_collections.ConfigDict, model: Network, variables: Any, cache: Cache, teacher_mode: str | None
) -> dict[str, dict[str, np.ndarray]] | None:
    """Frozen trunks' cached features of the dev and final splits, so that evaluation runs only the
    recurrent layer and heads, as training does (None: evaluate on pixels). The strong setting's windows
    and the one-stage pair evaluate on pixels."""
    if not build.cached_trunks(config) or build.is_windowed(config) or teacher_mode == "joint":
        return None
    splits = ("dev", *final_splits_present(config, cache))
    return trunk_features.frozen_feature_arrays(config, model, variables, cache, splits=splits)[0]


def final_evaluations(
    config, model, state, cache: Cache, workdir: Path, targets, dtype, stream_step, feature_arrays=None
) -> dict[str, dict[str, Any]]:
    """`eval_<split>.json` of the final model for each of `config.eval.final_splits` the cache has.

    These splits (a held-out test split) are scored once, with the model the run ends with; nothing is
    chosen on them. Written, with their `provenance`, before `eval.json`, which marks the run finished.
    Returns `{split: result}`.
    """
    results = {}
    for split in final_splits_present(config, cache):
        result = evaluate(
            model, sharding.local_view(state.variables), cache, config, split=split, targets=targets,
            dtype=dtype, stream_step=stream_step, feature_arrays=feature_arrays,
        )  # fmt: skip
        results[split] = write_final(workdir, split, result)
    return results


def final_splits_present(config: ml_collections.ConfigDict, cache: Cache) -> list[str]:
    """`eval.final_splits` that the cache has videos of (a warning for each missing one)."""
    present = []
    for split in config.eval.final_splits:
        if not cache.ids(split):
            logging.warning("eval.final_splits: the cache has no %r videos; skipped.", split)
            continue
        present.append(split)
    return present


def write_final(workdir: Path, split: str, result: dict[str, Any]) -> dict[str, Any]:
    """Labels a final evaluation with its split and writes `eval_<split>.json` (process 0)."""
    result = {**result, "split": split}
    if jax.process_index() == 0:
        (workdir / f"eval_{split}.json").write_text(
            json.dumps({**result, "provenance": provenance()}, indent=2)
        )
    return result


def step_modalities(config: ml_collections.ConfigDict, teachers: Teachers) -> tuple[str, ...]:
    """What the train step reads: the teacher's modalities when one trains (teacher stage, one-stage
    pair), every modality of the frozen teachers when they run in the step (online mode), else the
    frames."""
    if config.stage == "teacher" or build.is_joint(config):
        return build.teacher_modalities(config)
    if len(teachers) and config.teacher.mode == "online":
        return teachers.reads
    return ("visual",)


def grain_read_options() -> Any:
    import grain

    # Clip reading is numpy slicing of memory-mapped arrays: threads overlap it with the step.
    return grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)


def steps_per_epoch(
    config: ml_collections.ConfigDict, cache: Cache, video_ids: list[str] | None = None
) -> int:
    """Optimizer steps for one pass over the training frames (the unit of the learning-rate decay): of
    every training video, or of `video_ids`, those the clip stream draws from."""
    videos = cache.manifest["videos"]
    frames = sum(videos[v]["num_frames"] for v in (cache.ids("train") if video_ids is None else video_ids))
    per_example = config.data.window_subsequences * config.data.subsequence_frames or config.data.clip_frames
    return max(1, -(-frames // (config.data.batch_size * per_example)))


def load_pretrained(config: ml_collections.ConfigDict, variables: dict[str, Any]) -> dict[str, Any]:
    """Replaces trunk weights with the files named in `config.pretrained`, checking every shape.

    Each file is a PyTorch checkpoint, a PyTorch-named `.npz`, or a file converted by
    `python -m pkd_jax.weights import` (see `weights.load_trunk`).
    """
    if not any(config.pretrained.values()):
        return variables
    from pkd_jax import weights

    for group in ("visual_cnn", "audio_cnn"):
        missing: tuple[str, ...]
        path = config.pretrained.get(group, "")
        if not path:
            continue
        if group not in variables["params"]:
            raise ValueError(f"config.pretrained.{group} is set but the {config.stage} model has no {group}")
        if group == "visual_cnn" and config.model.visual_trunk == "r3d18":
            # torchvision's r3d_18 state dict (Kinetics-400); its 400-class fc is not part of the trunk.
            imported, missing = weights.r3d18_from_torch(weights.load_torch_file(path)), ()
        elif group == "visual_cnn":
            # The FER2013 checkpoint has no 4608 -> 512 fc; that layer then keeps its fresh init.
            imported = weights.load_trunk(path, "vgg19_bn")
            missing = () if "fc" in imported["params"] else ("fc",)
        else:
            channels = variables["params"]["audio_cnn"]["conv1"]["kernel"].shape[2]
            imported, missing = weights.load_trunk(path, "resnet18", in_channels=channels), ()
        variables = weights.merge_into(variables, imported, path=group, allow_missing=missing)
        logging.info("Loaded %s weights from %s%s.", group, path, " (fc kept fresh)" if missing else "")
    return variables


def log_summary(config, model, variables, mesh, cache, start: int, workdir: Path) -> None:
    """The start-up summary: one line on the console; devices, mesh, parameter counts, dataset sizes
    in the log."""
    counts = parameter_counts(variables["params"])
    console.say(
        f"{config.stage} in {workdir}: {sum(counts.values()):,} params, {len(cache.ids('train'))} train / "
        f"{len(cache.ids('dev'))} dev videos, steps {start} -> {config.train.num_steps} on "
        f"{jax.device_count()} {jax.devices()[0].platform} device(s)",
        to_console=jax.process_index() == 0,
    )
    lines = [
        f"stage {config.stage}, targets {tuple(build.target_names(config))}",
        f"devices {jax.device_count()} x {jax.devices()[0].platform} over {jax.process_count()} process(es), "
        f"mesh {dict(mesh.shape)}",
        f"params {sum(counts.values()):,} ({', '.join(f'{k} {v:,}' for k, v in counts.items())})",
        f"data {cache.root}: {len(cache.ids('train'))} train / {len(cache.ids('dev'))} dev videos, "
        f"{len(cache.failures())} failed in preprocessing",
        f"steps {start} -> {config.train.num_steps}, global batch {config.data.batch_size} clips x "
        f"{config.data.clip_frames} frames",
    ]
    if build.frozen_trunks(config):
        lines.append(
            f"frozen {', '.join(build.frozen_trunks(config))} ({config.model.frozen_features} features)"
        )
    for line in lines:
        logging.info(line)
