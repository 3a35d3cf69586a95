"""The train state pytree and the per-module optimizer."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

# Top-level parameter groups of Teacher / Student and the config field holding each learning rate.
LR_FIELDS = {
    "visual_cnn": "lr_visual_cnn",
    "temporal": "lr_temporal",
    "head": "lr_head",
    "audio_cnn": "lr_audio_cnn",
    "physio_cnn": "lr_physio_cnn",
}
# `optim.schedule` values: "step" (the `lr_decay*` staircase) or "warmup_cosine" (`warmup_cosine`).
SCHEDULES = ("step", "warmup_cosine")


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; a pytree, so it is donated to and returned by the step."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    rng: jax.Array  # base key; the step folds the step number in, so no key is ever reused

    @property
    def variables(self) -> dict[str, Any]:
        """The Flax variable dict for `apply`."""
        return {"params": self.params, "batch_stats": self.batch_stats}


def step_decay(lr: float, rate: float, start_step: int, every_steps: int) -> optax.Schedule | float:
    """`lr`, multiplied by `rate` at `start_step` and again every `every_steps` after it (staircase).

    The Aff-Wild2 recipe "x0.8 every 2 epochs after epoch 5" is rate 0.8, start 5 epochs, every 2 epochs:
    the first decay happens at epoch 5. `rate` 1.0 is a constant learning rate.
    """
    if rate == 1.0:
        return lr
    if every_steps < 1 or start_step < 0:
        raise ValueError(
            f"learning-rate decay needs every_steps >= 1 and start_step >= 0, got {every_steps}, {start_step}"
        )

    def schedule(step: jax.Array) -> jax.Array:
        decays = jnp.where(step >= start_step, 1 + (step - start_step) // every_steps, 0)
        return lr * rate ** decays.astype(jnp.float32)

    return schedule


def warmup_cosine(lr: float, warmup_steps: int, total_steps: int, final_fraction: float) -> optax.Schedule:
    """0 rising linearly to `lr` over `warmup_steps`, then a cosine down to `final_fraction * lr` at
    `total_steps` (and held there), optax's `warmup_cosine_decay_schedule`.

    optax counts `total_steps` including the warm-up, so the cosine spans `total_steps - warmup_steps`.
    The rate at step 0 is 0 when there is a warm-up: the first update leaves the parameters as they are.
    """
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warm-up needs 0 <= warmup_steps < total_steps, got {warmup_steps}, {total_steps}")
    if not 0.0 <= final_fraction <= 1.0:
        raise ValueError(f"final_fraction must be in [0, 1], got {final_fraction}")
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr, warmup_steps=warmup_steps, decay_steps=total_steps,
        end_value=lr * final_fraction,
    )  # fmt: skip


def learning_rate(
    optim: ml_collections.ConfigDict, base_lr: float, *, steps_per_epoch: int, total_steps: int | None
) -> optax.Schedule | float:
    """The rate of a group with `base_lr` under `optim.schedule`: every group follows the same shape,
    scaled by its own base rate."""
    schedule = optim.get("schedule", "step")  # configs written before the field existed: the staircase
    if schedule == "step":
        return step_decay(
            base_lr, optim.lr_decay, optim.lr_decay_start_epoch * steps_per_epoch,
            optim.lr_decay_every_epochs * steps_per_epoch,
        )  # fmt: skip
    if schedule == "warmup_cosine":
        if total_steps is None:
            raise ValueError("optim.schedule='warmup_cosine' needs the run's total steps (train.num_steps)")
        return warmup_cosine(base_lr, optim.warmup_steps, total_steps, optim.final_lr_fraction)
    raise ValueError(f"unknown optim.schedule {schedule!r}; choose one of {list(SCHEDULES)}")


def make_optimizer(
    optim: ml_collections.ConfigDict,
    params: Any,
    *,
    steps_per_epoch: int = 1000,
    total_steps: int | None = None,
    frozen_groups: tuple[str, ...] = (),
) -> optax.GradientTransformation:
    """Adam (AdamW with weight decay) with one learning rate per top-level module group.

    Every group's rate follows `learning_rate`: with `optim.schedule="step"`, `step_decay` with the
    config's `lr_decay*` fields, counted in epochs of `steps_per_epoch` optimizer steps (the loop passes
    one pass over the training frames); with "warmup_cosine", `warmup_cosine` ending at `total_steps`
    (the loop passes `train.num_steps`). Groups in `frozen_groups` (frozen trunks,
    `build.frozen_trunks`) are never updated, not even by weight decay.
    """
    labels = group_labels(params)

    def adam(base_lr: float) -> optax.GradientTransformation:
        lr = learning_rate(optim, base_lr, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
        if optim.weight_decay > 0:
            return optax.adamw(lr, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay)
        return optax.adam(lr, b1=optim.b1, b2=optim.b2)

    present = set(jax.tree.leaves(labels))
    groups = {name: adam(optim[field]) for name, field in LR_FIELDS.items() if name in present}
    for name in frozen_groups:
        if name not in present:
            raise ValueError(f"frozen parameter group {name!r} is not in the model ({sorted(present)})")
        groups[name] = optax.set_to_zero()
    frozen = biases_before_batchnorm(params)
    if frozen:
        # Their true gradient is 0 (BatchNorm removes any per-channel shift); Adam would turn the float
        # rounding noise in it into full learning-rate steps, a random walk that differs between programs.
        groups["frozen"] = optax.set_to_zero()
        for path in frozen:
            node = labels
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = "frozen"
    tx = optax.multi_transform(groups, labels)
    if optim.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(optim.grad_clip), tx)
    return tx


def group_labels(params: Any) -> Any:
    """The parameter tree with each leaf replaced by its group's name (`LR_FIELDS`): the top-level
    module, or for the one-stage pair (`params["teacher"]`, `params["student"]`) the module under it."""
    if params and set(params) <= {"teacher", "student"}:
        return {side: group_labels(subtree) for side, subtree in params.items()}
    unknown = set(params) - set(LR_FIELDS)
    if unknown:
        raise ValueError(f"parameter groups {sorted(unknown)} have no learning rate field")
    return {name: jax.tree.map(lambda _, n=name: n, subtree) for name, subtree in params.items()}


def biases_before_batchnorm(params: Any) -> list[tuple[str, ...]]:
    """Paths of conv biases that a BatchNorm follows directly (VGG19-BN's `features_<i>/bias` with a
    BatchNorm at `features_<i + 1>`, torchvision's layout); training leaves them at their initial value."""
    found = []

    def visit(tree: Any, path: tuple[str, ...]) -> None:
        if not isinstance(tree, dict):
            return
        for name, child in tree.items():
            if name.startswith("features_") and isinstance(child, dict) and {"kernel", "bias"} <= set(child):
                following = tree.get(f"features_{int(name.split('_')[1]) + 1}")
                if isinstance(following, dict) and "scale" in following:
                    found.append((*path, name, "bias"))
            visit(child, (*path, name))

    visit(params, ())
    return found


def create_state(variables: dict[str, Any], tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    """A fresh state at step 0 from initialised model variables."""
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=rng,
    )


def parameter_counts(params: Any) -> dict[str, int]:
    """Parameters per top-level module group (`visual_cnn`, `temporal`, ...), from shapes only."""
    return {k: sum(int(x.size) for x in jax.tree.leaves(v)) for k, v in params.items()}
