"""Orbax checkpoints: the train state and the input iterator state saved together.

Kept: the latest `keep_latest` checkpoints and the `keep_best` best by dev CCC. Saving is asynchronous;
`wait()` blocks until the last save is on disk. Restoring the data iterator with the state makes a
resumed run draw exactly the batches an uninterrupted run would have.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

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

    def restore(self, step: int, abstract_state: Any, data_iterator: Any = None) -> Any:
        """The state at `step`; restores the iterator in place when given."""
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree: Any) -> Any:
    """Shape/dtype/sharding skeleton of `tree`, the restore target."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
