"""`run(config, workdir)`: train one stage (teacher, visual baseline or student) end to end.

Order of a step, following kauldron: run the step, log, evaluate, checkpoint, and only then draw the
next batch, so a checkpoint's iterator state is exactly where the next step resumes. Metrics stay on
the device between logging steps; on a logging step they are fetched together, a non-finite loss
stops training with the step and the clips that caused it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import json
import signal
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from pkd_jax import console, losses
from pkd_jax.data.cache import Cache
from pkd_jax.data.pipeline import train_dataset
from pkd_jax.precompute import frozen_bn, trunk_features
from pkd_jax.provenance import provenance
from pkd_jax.train import build, sharding
from pkd_jax.train.config_check import validate_config
from pkd_jax.train.evaluate import evaluate
from pkd_jax.train.feature_cache import open_feature_cache
from pkd_jax.train.state import create_state, make_optimizer, parameter_counts
from pkd_jax.train.steps import make_stream_step, make_train_step
from pkd_jax.train.teachers import Teachers, prepare_teachers, student_loss
from pkd_jax.workdir.checkpoints import Checkpointer, restore_newest
from pkd_jax.workdir.config_record import check_not_teacher_workdir, record_config, with_loss
from pkd_jax.workdir.lock import hold_workdir
from pkd_jax.workdir.metric_writer import MetricWriter
from pkd_jax.workdir.model_card import write_model_card


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the message names the step and the clips."""


def run(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    loss_fn: losses.LossFn | None = None,
    allow_config_change: bool = False,
) -> dict[str, Any]:
    """Trains `config.stage` in `workdir`, resuming from its latest checkpoint; returns the final eval.

    `loss_fn(outputs, batch) -> (loss, metrics)` replaces the config's loss (`build.build_loss`); it is
    recorded by name in config.json as `loss.custom`, and a resumed run must pass the same one. One run
    at a time holds the workdir (`workdir_lock`); a resumed run's config must match the recorded one
    except where `allow_config_change` lets it differ (`config_drift`).
    """
    validate_config(config)
    workdir = Path(workdir)
    check_not_teacher_workdir(config, workdir)
    with hold_workdir(workdir):
        config = with_loss(config, workdir, loss_fn)
        record_config(config, workdir, allow_change=allow_config_change, write=jax.process_index() == 0)
        return _train(config, workdir, loss_fn)


def _train(config: ml_collections.ConfigDict, workdir: Path, loss_fn: losses.LossFn | None) -> dict[str, Any]:
    chief = jax.process_index() == 0
    mesh = sharding.make_mesh()
    cache = open_feature_cache(config)
    targets = build.target_indices(config)
    dtype = build.compute_dtype(config)
    distill = config.stage == "student"
    teacher_mode = config.teacher.mode if distill else None

    teachers = None  # a two-stage student's frozen teacher(s)
    extra_arrays: dict[str, Any] = {}
    if distill and teacher_mode != "joint":
        teachers = prepare_teachers(config, workdir, cache, mesh, dtype=dtype, chief=chief)
        extra_arrays.update(teachers.extra_arrays)

    # Frozen trunks with cached features: the batch carries their features instead of their inputs (the
    # online teacher still needs frames and audio).
    cached_trunks = build.cached_trunks(config)
    reads = step_modalities(config, teachers)
    pipeline = build.pipeline_config(
        config,
        batch_size=sharding.per_process_batch_size(config.data.batch_size, mesh),
        with_audio="audio" in reads and ("audio_cnn" not in cached_trunks or teacher_mode == "online"),
        with_frames="visual_cnn" not in cached_trunks or teacher_mode == "online",
        with_physio="physio" in reads,
        train=True,
    )

    model = build.build_model(config)
    example = train_dataset(
        cache, dataclasses.replace(pipeline, with_frames=True, with_audio="audio" in reads)
    )[0]
    variables = build.init_variables(model, example, config.seed)
    state_rng = jax.random.key(config.seed)  # dropout keys: folded with the step number
    variables = load_pretrained(config, variables)
    variables = frozen_bn.calibrate_untrained(config, model, variables, cache)
    frame_arrays, trunk_digests = trunk_features.frozen_feature_arrays(config, model, variables, cache)
    dataset = train_dataset(
        cache, pipeline, shard_index=jax.process_index(), shard_count=jax.process_count(),
        extra_arrays=extra_arrays or None, frame_arrays=frame_arrays or None,
    )  # fmt: skip
    tx = make_optimizer(
        config.optim, variables["params"], steps_per_epoch=steps_per_epoch(config, cache),
        frozen_groups=build.frozen_trunks(config),
    )  # fmt: skip
    state = sharding.replicate(create_state(variables, tx, state_rng), mesh)
    if loss_fn is None:
        loss_fn = student_loss(config, teachers.thetas) if teachers else build.build_loss(config)
    train_step = jax.jit(
        make_train_step(
            model,
            tx,
            loss_fn,
            targets=targets,
            dtype=dtype,
            teacher=teachers.model if teachers else None,
            teacher_mode=teacher_mode,
            warmup_steps=config.teacher.warmup_steps,
            teacher_loss_fn=losses.compose(ccc=config.loss.ccc, distill=None)
            if teacher_mode == "joint"
            else None,
        ),
        donate_argnums=0,
    )
    teacher_variables = teachers.step_variables if teachers else None
    stream_step = jax.jit(make_stream_step(model, dtype))

    iterator = iter(dataset.to_iter_dataset(grain_read_options()))
    state, start, checkpointer = restore_newest(
        functools.partial(
            Checkpointer, workdir / "checkpoints", keep_latest=config.train.keep_latest,
            keep_best=config.train.keep_best,
        ),
        state,
        iterator,
    )  # fmt: skip
    if start:
        logging.info("Resumed from step %d.", start)
        trunk_features.check_restored_trunks(trunk_digests, sharding.local_view(state.variables), workdir)
    writer = MetricWriter(workdir, resume_step=start)
    log_summary(config, model, variables, mesh, cache, start, workdir)

    stop = _StopFlag()
    pending: list[dict[str, jax.Array]] = []
    recent_clips: collections.deque = collections.deque(maxlen=config.train.log_every)
    last_eval: dict[str, Any] = {}
    profile = tuple(config.train.profile_steps)
    bar = tqdm(total=config.train.num_steps, initial=start, desc=config.stage, unit="step", disable=not chief)
    tick = time.perf_counter()
    step = start
    try:
        while step < config.train.num_steps:
            if profile and step == profile[0]:
                jax.profiler.start_trace(str(workdir / "profile"))
            batch = next(iterator)
            recent_clips.append((step + 1, clip_names(batch)))
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                state, metrics = train_step(state, sharding.shard_batch(batch, mesh), teacher_variables)
            step += 1
            pending.append(metrics)
            bar.update(1)
            if profile and step == profile[1]:
                jax.block_until_ready(state)
                jax.profiler.stop_trace()
            last = step == config.train.num_steps
            stopping = stop.check(step, every=config.train.log_every)
            if step % config.train.log_every == 0 or last or stopping:
                summary = summarize(pending, recent_clips)  # waits for the device: time it after
                summary["steps_per_s"] = len(pending) / (time.perf_counter() - tick)
                writer.write(step, summary)
                bar.set_postfix(loss=f"{summary['loss']:.4f}")
                pending, tick = [], time.perf_counter()
            dev_ccc = None
            if step % config.train.eval_every == 0 or last:
                # Every process evaluates the whole dev set on its own first device; process 0 writes.
                last_eval = evaluate(
                    model, sharding.local_view(state.variables), cache, config, targets=targets, dtype=dtype,
                    stream_step=stream_step,
                    predictions_dir=workdir / "predictions" / str(step)
                    if config.eval.save_predictions and chief else None,
                )  # fmt: skip
                dev_ccc = last_eval["mean_ccc"]
                writer.write(step, flatten_eval(last_eval), kind="eval")
                console.say(console.eval_line(step, last_eval), to_console=chief)
            if dev_ccc is not None or step % config.train.checkpoint_every == 0 or last or stopping:
                checkpointer.save(step, state, iterator, dev_ccc=dev_ccc)
            if stopping:
                logging.warning("Stopping on signal at step %d after saving a checkpoint.", step)
                break
    finally:
        bar.close()
        checkpointer.close()
        writer.close()
        stop.restore()
    finals = {}
    if step >= config.train.num_steps:
        finals = final_evaluations(config, model, state, cache, workdir, targets, dtype, stream_step)
    if chief and last_eval:  # the card, then eval.json (with what produced it): the run is finished
        record = {**last_eval, "provenance": provenance()}
        write_model_card(
            workdir, config, {"dev": last_eval, **finals}, cache, record["provenance"], step=step,
            params=state.variables["params"], teacher_source=teachers.source if teachers else None,
        )  # fmt: skip
        (workdir / "eval.json").write_text(json.dumps(record, indent=2))
    return last_eval


def final_evaluations(
    config, model, state, cache: Cache, workdir: Path, targets, dtype, stream_step
) -> dict[str, dict[str, Any]]:
    """`eval_<split>.json` of the final model for each of `config.eval.final_splits` the cache has.

    These splits (a held-out test split) are scored once, with the model the run ends with; nothing is
    chosen on them. Written, with their `provenance`, before `eval.json`, which marks the run finished.
    Returns `{split: result}`.
    """
    results = {}
    for split in config.eval.final_splits:
        if not cache.ids(split):
            logging.warning("eval.final_splits: the cache has no %r videos; skipped.", split)
            continue
        result = evaluate(
            model, sharding.local_view(state.variables), cache, config, split=split, targets=targets,
            dtype=dtype, stream_step=stream_step,
        )  # fmt: skip
        result["split"] = split
        results[split] = result
        if jax.process_index() == 0:
            (workdir / f"eval_{split}.json").write_text(
                json.dumps({**result, "provenance": provenance()}, indent=2)
            )
    return results


def step_modalities(config: ml_collections.ConfigDict, teachers: Teachers | None) -> tuple[str, ...]:
    """What the train step reads: the teacher's modalities when one trains (teacher stage, one-stage
    pair) or runs in the step (online mode), else the frames."""
    if config.stage == "teacher" or build.is_joint(config):
        return build.teacher_modalities(config)
    if teachers is not None and config.teacher.mode == "online":
        return teachers.reads
    return ("visual",)


def grain_read_options() -> Any:
    import grain

    # Clip reading is numpy slicing of memory-mapped arrays: threads overlap it with the step.
    return grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)


def clip_names(batch: dict[str, Any]) -> list[str]:
    """`video@start` of every clip of a host batch, for error messages."""
    return [f"{v}@{int(idx[0])}" for v, idx in zip(batch["video_id"], batch["frame_index"], strict=True)]


def summarize(pending: list[dict[str, jax.Array]], recent_clips: collections.deque) -> dict[str, float]:
    """Means of the device metrics since the last log; raises on the first non-finite step."""
    fetched = jax.device_get(pending)
    finite = np.array([bool(m["finite"]) for m in fetched])
    if not finite.all():
        first = int(np.argmin(finite))
        step, clips = list(recent_clips)[-len(fetched) :][first]
        raise NonFiniteLossError(
            f"non-finite loss at step {step}; clips (video@first_frame): {', '.join(clips)}"
        )
    keys = [k for k in fetched[0] if k != "finite"]
    return {k: float(np.mean([m[k] for m in fetched])) for k in keys}


def flatten_eval(result: dict[str, Any]) -> dict[str, float]:
    """Scalar view of an evaluation for the metric writers."""
    out = {"mean_ccc": result["mean_ccc"]}
    for kind in ("raw", "postprocessed"):
        if kind in result:
            for scope in ("mean_over_videos", "concatenated"):
                for target, value in result[kind][scope].items():
                    out[f"{kind}/{scope}/{target}"] = value
    return out


def steps_per_epoch(config: ml_collections.ConfigDict, cache: Cache) -> int:
    """Optimizer steps for one pass over the training frames (the unit of the learning-rate decay)."""
    videos = cache.manifest["videos"]
    frames = sum(videos[v]["num_frames"] for v in cache.ids("train"))
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


class _StopFlag:
    """SIGTERM (and SIGINT) ask the loop to save a checkpoint and exit at the end of the current step."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: signals stay with the caller
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def check(self, step: int, every: int) -> bool:
        """Whether to stop after `step`.

        Many processes must stop at the same step (saving is collective) though each gets its own
        signal: they agree every `every` steps, stopping when any of them was signalled. The vote is a
        small collective that waits for the step, so it runs only on logging steps, which wait anyway.
        """
        if jax.process_count() == 1:
            return self.requested
        if step % every:
            return False
        from jax.experimental import multihost_utils

        return bool(np.any(multihost_utils.process_allgather(np.asarray(self.requested))))

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
