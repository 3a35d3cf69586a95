"""Orbax checkpoints: the train state and the input iterator state saved together.

Kept: the latest `keep_latest` checkpoints and the `keep_best` best by dev CCC. Saving is asynchronous;
`wait()` blocks until the last save is on disk. Restoring the data iterator with the state makes a
resumed run draw exactly the batches an uninterrupted run would have.

Many processes: every process calls every method here (saving and restoring are collective; orbax has
process 0 write the shared files and each process its own shards), on a directory they all see. Each
process's iterator state is its own file, `data/process_<i>-of-<n>.json`; a run with a different number
of processes, which finds none for itself, moves its iterator to a position given by the caller instead.

Resuming from the newest checkpoint that can be read, and saying which one could not.

A checkpoint can be damaged after the fact (a truncated array file, a deleted `_METADATA`, an emptied
manifest, a corrupted iterator state) although Orbax wrote it atomically. The newest one that fails to
restore is moved to `<workdir>/checkpoints_damaged/<step>` (kept for inspection, out of Orbax's sight)
with a warning naming it and the problem, and the next older checkpoint is tried; when none is left the
run stops with what to delete. A checkpoint whose arrays do not fit the configured network is not
damage: that is an error naming every mismatched parameter.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

BEST_METRIC = "dev_ccc"


class Checkpointer:
    """Thin policy layer over `ocp.CheckpointManager` for one workdir."""

    def __init__(
        self, directory: str | Path, *, keep_latest: int = 1, keep_best: int = 1, async_save: bool = True
    ):
        policies = ocp.checkpoint_managers
        policy = policies.AnyPreservationPolicy(
            [
                policies.LatestN(n=keep_latest),
                policies.BestN(
                    get_metric_fn=lambda m: m[BEST_METRIC], reverse=False, n=keep_best,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        )  # fmt: skip
        # best_fn makes the manager store each save's metrics; the policy decides what is kept.
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy,
            best_fn=lambda m: m[BEST_METRIC],
            best_mode="max",
            keep_checkpoints_without_metrics=True,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))

    def save(self, step: int, state: Any, data_iterator: Any = None, *, dev_ccc: float | None = None) -> None:
        """Saves `state` (and the iterator, when given) at `step`, with the dev CCC when known."""
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        metrics = None if dev_ccc is None else {BEST_METRIC: float(dev_ccc)}
        self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the highest dev CCC, or the latest when no checkpoint has metrics."""
        scored = []
        for step in self.manager.all_steps():
            metrics = self.manager.metrics(step) or {}
            if BEST_METRIC in metrics:
                scored.append((metrics[BEST_METRIC], step))
        return max(scored)[1] if scored else self.manager.latest_step()

    def has_iterator_state(self, step: int) -> bool:
        """Whether `step` holds an iterator state for this process under the current process count."""
        name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        return (self.directory / str(step) / "data" / name).is_file()

    def restore(
        self, step: int, abstract_state: Any, data_iterator: Any = None, *, data_position: int | None = None
    ) -> Any:
        """The state at `step`, placed as `abstract_state` says; restores the iterator in place when given.

        Args:
            step: the checkpoint to read.
            abstract_state: shapes, dtypes and shardings of the result (see `abstract_like`); the
                checkpoint may come from a different number of processes or devices.
            data_iterator: a grain dataset iterator, set to its saved state.
            data_position: where to put `data_iterator` instead when the checkpoint was written by a
                different number of processes (its saved states are other processes' shards); without
                it, that case is an error.
        """
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        reposition = data_iterator is not None and not self.has_iterator_state(step)
        if reposition and data_position is None:
            raise FileNotFoundError(
                f"{self.directory / str(step) / 'data'} has no iterator state for process "
                f"{jax.process_index()} of {jax.process_count()}: it was written by a different number of "
                "processes; pass data_position to restart the input stream at a known position"
            )
        if data_iterator is not None and not reposition:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        state = self.manager.restore(step, args=ocp.args.Composite(**items))["state"]
        if reposition:
            assert data_position is not None  # checked above
            set_iterator_position(data_iterator, data_position)
        return state

    def restore_tree(self, step: int, sharding: jax.sharding.Sharding) -> dict[str, Any]:
        """The state saved at `step` as a plain tree (`params`, `batch_stats`, ...), every array on `sharding`.

        Needs no model to shape it and reads a checkpoint written by any number of processes and
        devices: how a student loads its teacher, or a tool reads a run trained elsewhere.
        """
        with ocp.StandardCheckpointer() as reader:
            saved = reader.metadata(self.directory / str(step) / "state").item_metadata
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), saved.tree)
        args = ocp.args.Composite(state=ocp.args.StandardRestore(target))
        return self.manager.restore(step, args=args)["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def check_tree_shapes(expected: Any, got: Any, what: str, against: str) -> None:
    """Raises ValueError listing every leaf of `got` missing from, or shaped unlike, `expected`."""
    want = {jax.tree_util.keystr(k): tuple(v.shape) for k, v in jax.tree_util.tree_leaves_with_path(expected)}
    have = {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_leaves_with_path(got)}
    diff = sorted(
        f"{k}: expected {want.get(k)}, found {have.get(k)}"
        for k in want.keys() | have.keys()
        if want.get(k) != have.get(k)
    )
    if diff:
        raise ValueError(f"{what} does not match {against}: " + "; ".join(diff[:8]))


def set_iterator_position(iterator: Any, position: int) -> None:
    """Moves a grain `MapDataset` iterator so that its next element is element `position`."""
    state = iterator.get_state()
    if not isinstance(state, dict) or "next_index" not in state:
        raise TypeError(
            f"cannot reposition a {type(iterator).__name__}: its state {state!r} has no next_index"
        )
    iterator.set_state({**state, "next_index": int(position)})


def abstract_like(tree: Any) -> Any:
    """Shape/dtype/sharding skeleton of `tree`, the restore target."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def silence_stray_callbacks() -> None:
    """Drops the 'Event loop is closed' errors TensorStore's pending reads raise after a failed restore.

    Orbax restores on an asyncio loop that closes when one read fails; the reads still in flight then
    report hundreds of unraisable RuntimeErrors that say nothing about the checkpoint. Only that
    message is dropped; every other unraisable error still reaches the previous hook.
    """
    previous = sys.unraisablehook
    if getattr(previous, "_pkd_jax_filter", False):
        return

    def hook(unraisable: Any) -> None:
        error = unraisable.exc_value
        if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
            return
        previous(unraisable)

    hook._pkd_jax_filter = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def short_reason(error: BaseException, limit: int = 300) -> str:
    """`Type: first line of the message`, cut to `limit` characters (Orbax messages embed whole specs)."""
    text = str(error).strip().splitlines()
    first = (text[0] if text else "").split(" See full TensorStore details")[0]
    first = first if len(first) <= limit else first[:limit] + "..."
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


DAMAGED_DIR = "checkpoints_damaged"


class CheckpointDamagedError(RuntimeError):
    """No checkpoint of a workdir could be restored; the message names the damaged one."""


class _Mismatch(ValueError):
    pass


def _check_fits(checkpointer: Checkpointer, step: int, state: Any) -> None:
    """The network's parameters and statistics against the checkpoint's, before Orbax restores them."""
    directory = checkpointer.directory / str(step) / "state"
    with ocp.StandardCheckpointer() as reader:
        metadata = reader.metadata(directory).item_metadata
    if metadata is None:
        raise FileNotFoundError(f"{directory}: no readable array metadata (_METADATA or manifest.ocdbt)")
    saved = metadata.tree
    network = ("params", "batch_stats")
    expected = {k: v for k, v in flax.serialization.to_state_dict(state).items() if k in network}
    found = {
        k: jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), saved[k])
        for k in network
        if k in saved
    }
    try:
        check_tree_shapes(expected, found, f"checkpoint {directory}", "the configured network")
    except ValueError as e:
        raise _Mismatch(f"{e}; the config differs from the one this checkpoint was trained with") from None


def _move_aside(checkpointer: Checkpointer, step: int) -> Path:
    source = checkpointer.directory / str(step)
    target = checkpointer.directory.parent / DAMAGED_DIR / str(step)
    if target.exists():
        target = target.with_name(f"{step}-{int(time.time())}")
    if jax.process_index() == 0:
        target.parent.mkdir(parents=True, exist_ok=True)
        source.rename(target)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"pkd_jax damaged checkpoint {step}")
    return target


def restore_newest(
    open_checkpointer: Callable[[], Checkpointer], state: Any, iterator: Any
) -> tuple[Any, int, Checkpointer]:
    """(state, step, checkpointer) from the newest readable checkpoint; (state, 0, ...) without any.

    `open_checkpointer()` makes the run's Checkpointer; it is made again after a damaged checkpoint is
    moved away, so that Orbax forgets it. The iterator is restored in place with the state (one batch per
    step: a checkpoint from another process count restarts the stream at its step).

    Raises:
      CheckpointDamagedError: when checkpoints exist but none can be restored.
      ValueError: when a checkpoint does not fit the configured network (every parameter named).
    """
    checkpointer = open_checkpointer()
    damaged: list[str] = []
    while steps := sorted(checkpointer.manager.all_steps(), reverse=True):
        step = steps[0]
        try:
            _check_fits(checkpointer, step, state)
            restored = checkpointer.restore(step, abstract_like(state), iterator, data_position=step)
        except _Mismatch as e:
            checkpointer.close()
            raise ValueError(str(e)) from None
        except Exception as e:  # Orbax, TensorStore and grain raise many kinds
            silence_stray_callbacks()
            reason = short_reason(e)
            if len(steps) == 1:
                checkpointer.close()
                path = checkpointer.directory / str(step)
                raise CheckpointDamagedError(
                    f"checkpoint {path} is damaged ({reason}) and no older checkpoint is left"
                    f"{' (' + ', '.join(damaged) + ' moved aside before it)' if damaged else ''}: delete it "
                    f"(rm -r {path}) to train from step 0, or restore it from a backup"
                ) from e
            target = _move_aside(checkpointer, step)
            logging.warning(
                "Checkpoint %s is damaged (%s): moved to %s; trying step %d.",
                checkpointer.directory / str(step), reason, target, steps[1],
            )  # fmt: skip
            damaged.append(f"step {step} -> {target}")
            _close_quietly(checkpointer)
            checkpointer = open_checkpointer()
            continue
        if damaged:
            logging.warning("Resumed from step %d, the newest readable checkpoint.", step)
        return restored, step, checkpointer
    return state, 0, checkpointer


def _close_quietly(checkpointer: Checkpointer) -> None:
    try:
        checkpointer.close()
    except Exception as e:  # a manager that failed a restore may fail to close
        logging.info("Closing the checkpoint manager after a failed restore: %s", short_reason(e))
