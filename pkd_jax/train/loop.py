"""The training loop: `train(run)` on a `Run` from `pkd_jax.train.setup.setup`, and `run(config, workdir)`,
the two together as `python -m pkd_jax.main` and `pkd_jax.api.train` use them.

Order of a step, following kauldron: run the step, log, evaluate, checkpoint, and only then draw the
next batch, so a checkpoint's iterator state is exactly where the next step resumes. Metrics stay on
the device between logging steps; on a logging step they are fetched together, a non-finite loss
stops training with the step and the clips that caused it.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from pkd_jax import console, losses
from pkd_jax.config.check import validate_config
from pkd_jax.train import population
from pkd_jax.train.setup import Run, setup
from pkd_jax.workdir.config_record import check_not_teacher_workdir
from pkd_jax.workdir.lock import hold_workdir
from pkd_jax.workdir.population_record import write_record


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

    The config is checked, the workdir held (one run at a time, `pkd_jax.workdir.lock`), then `setup`
    builds the run (`loss_fn` and `allow_config_change` as there) and `train` runs it. With
    `train.population` > 1 the seeds train together as members `<workdir>/seed_<s>`
    (`pkd_jax.train.population`); the evaluation returned then has every member's under `members`.
    """
    workdir = Path(workdir)
    if config.train.population > 1:  # the members' workdirs are <workdir>/seed_<s>
        seeds = population.member_seeds(config)
        return run_population(
            [population.member_config(config, s) for s in seeds],
            [population.member_dir(workdir, s) for s in seeds], workdir,
            loss_fn=loss_fn, allow_config_change=allow_config_change,
        )  # fmt: skip
    validate_config(config)
    check_not_teacher_workdir(config, workdir)
    with hold_workdir(workdir):
        return train(setup(config, workdir, loss_fn=loss_fn, allow_config_change=allow_config_change))


def run_population(
    configs: Sequence[ml_collections.ConfigDict],
    workdirs: Sequence[Path],
    record_dir: Path,
    *,
    loss_fn: losses.LossFn | None = None,
    allow_config_change: bool = False,
) -> dict[str, Any]:
    """Trains the members (`configs[m]` in `workdirs[m]`) as one population recorded in `record_dir`.

    Every workdir is held for the whole run (`pkd_jax.workdir.lock`), the record directory too. Returns
    the last dev evaluation: `mean_ccc` over members, `member_ccc` and `members` (each one's evaluation).
    """
    for config, workdir in zip(configs, workdirs, strict=True):
        validate_config(config)
        check_not_teacher_workdir(config, workdir)
    population.check_members_agree(configs)
    with contextlib.ExitStack() as held:
        held.enter_context(hold_workdir(record_dir))
        for workdir in workdirs:
            held.enter_context(hold_workdir(workdir))
        if jax.process_index() == 0:
            write_record(record_dir, configs[0].stage, [c.seed for c in configs], workdirs)
        return train(population.setup_population(configs, workdirs, record_dir, loss_fn, allow_config_change))


def train(run: Run) -> dict[str, Any]:
    """Steps from `run.start_step` to `train.num_steps`: log, evaluate and checkpoint on the config's
    schedule, stop cleanly on SIGTERM / SIGINT; then `run.finish`. Returns the last dev evaluation."""
    cfg = run.config.train
    state, step, last_eval = run.state, run.start_step, {}
    log, trace, stop = _StepLog(run.writer), _Trace(run), _StopFlag()
    bar = tqdm(total=cfg.num_steps, initial=step, desc=run.config.stage, unit="step", disable=not run.chief)
    try:
        while step < cfg.num_steps:
            trace.before(step)
            batch = next(run.batches)
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                state, metrics = run.train_step(state, batch)
            step += 1
            trace.after(step, state)
            log.add(step, batch, metrics)
            bar.update(1)
            last = step == cfg.num_steps
            stopping = stop.check(step, every=cfg.log_every)
            if step % cfg.log_every == 0 or last or stopping:
                bar.set_postfix(loss=f"{np.mean(log.flush(step)['loss']):.4f}")
            dev_ccc = None
            if step % cfg.eval_every == 0 or last:
                last_eval = run.evaluate(state, step)
                dev_ccc = last_eval["member_ccc"] if "members" in last_eval else last_eval["mean_ccc"]
                run.writer.write(step, flatten_eval(last_eval), kind="eval")
                console.say(console.eval_line(step, last_eval), to_console=run.chief)
            # With keep_best, every evaluation is a candidate checkpoint; else only the schedule's.
            best_candidate = dev_ccc is not None and cfg.keep_best > 0
            if best_candidate or step % cfg.checkpoint_every == 0 or last or stopping:
                run.checkpointer.save(step, state, run.batches, dev_ccc=dev_ccc)
            if stopping:
                logging.warning("Stopping on signal at step %d after saving a checkpoint.", step)
                break
    finally:
        bar.close()
        run.checkpointer.close()
        run.writer.close()
        stop.restore()
    if step >= cfg.num_steps:
        run.finish(state, step, last_eval)
    return last_eval


class _Trace:
    """An XLA trace of steps [first, last) of `train.profile_steps` into `<workdir>/profile`."""

    def __init__(self, run: Run) -> None:
        self.steps, self.directory = tuple(run.config.train.profile_steps), run.workdir / "profile"

    def before(self, step: int) -> None:
        if self.steps and step == self.steps[0]:
            jax.profiler.start_trace(str(self.directory))

    def after(self, step: int, state: Any) -> None:
        if self.steps and step == self.steps[1]:
            jax.block_until_ready(state)
            jax.profiler.stop_trace()


class _StepLog:
    """Device metrics of the steps since the last log, fetched and written together."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        self.pending: list[dict[str, jax.Array]] = []
        self.clips: list[tuple[int, Any]] = []  # (step, clip names), one per pending step
        self.tick = time.perf_counter()

    def add(self, step: int, batch: dict[str, Any], metrics: dict[str, jax.Array]) -> None:
        self.pending.append(metrics)
        self.clips.append((step, clip_names(batch)))

    def flush(self, step: int) -> dict[str, Any]:
        summary = summarize(self.pending, self.clips)  # waits for the device: time it after
        summary["steps_per_s"] = len(self.pending) / (time.perf_counter() - self.tick)
        self.writer.write(step, summary)
        self.pending, self.clips, self.tick = [], [], time.perf_counter()
        return summary


def clip_names(batch: dict[str, Any]) -> list[str] | list[list[str]]:
    """`video@start` of every clip of a host batch, for error messages (a list per member of a
    population's batch)."""
    if np.ndim(batch["video_id"]) == 2:
        return [
            [f"{v}@{int(idx[0])}" for v, idx in zip(videos, starts, strict=True)]
            for videos, starts in zip(batch["video_id"], batch["frame_index"], strict=True)
        ]
    return [f"{v}@{int(idx[0])}" for v, idx in zip(batch["video_id"], batch["frame_index"], strict=True)]


def summarize(pending: list[dict[str, jax.Array]], clips: list[tuple[int, Any]]) -> dict[str, Any]:
    """Means of the device metrics since the last log (per member, as arrays, for a population); raises
    on the first non-finite step, naming it, the member and its clips (`clips[i]` is step i's
    `(step, clip names)`)."""
    fetched = jax.device_get(pending)
    finite = np.array([np.asarray(m["finite"], bool) for m in fetched])
    if not finite.all():
        first, *member = np.argwhere(~finite)[0]
        step, names = clips[first]
        where = f" (population member {member[0]})" if member else ""
        names = names[member[0]] if member else names
        raise NonFiniteLossError(
            f"non-finite loss at step {step}{where}; clips (video@first_frame): {', '.join(names)}"
        )
    keys = [k for k in fetched[0] if k != "finite"]
    means = {k: np.mean(np.stack([np.asarray(m[k]) for m in fetched]), axis=0) for k in keys}
    return {k: float(v) if np.ndim(v) == 0 else v for k, v in means.items()}


def flatten_eval(result: dict[str, Any]) -> dict[str, Any]:
    """Scalar view of an evaluation for the metric writers (arrays over the members of a population)."""
    if "members" in result:
        rows = [flatten_eval(m) for m in result["members"]]
        return {k: np.array([row[k] for row in rows]) for k in rows[0]}
    out = {"mean_ccc": result["mean_ccc"]}
    for kind in ("raw", "postprocessed"):
        if kind in result:
            for scope in ("mean_over_videos", "concatenated"):
                for target, value in result[kind][scope].items():
                    out[f"{kind}/{scope}/{target}"] = value
    return out


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
