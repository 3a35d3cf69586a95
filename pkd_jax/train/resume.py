"""Resuming from the newest checkpoint that can be read, and saying which one could not.

A checkpoint can be damaged after the fact (a truncated array file, a deleted `_METADATA`, an emptied
manifest, a corrupted iterator state) although Orbax wrote it atomically. The newest one that fails to
restore is moved to `<workdir>/checkpoints_damaged/<step>` (kept for inspection, out of Orbax's sight)
with a warning naming it and the problem, and the next older checkpoint is tried; when none is left the
run stops with what to delete. A checkpoint whose arrays do not fit the configured network is not
damage: that is an error naming every mismatched parameter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import jax
import orbax.checkpoint as ocp
from absl import logging

from pkd_jax.train.checkpoint import (
    Checkpointer,
    abstract_like,
    check_tree_shapes,
    short_reason,
    silence_stray_callbacks,
)

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
