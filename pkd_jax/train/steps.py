"""Pure train and evaluation steps; `jax.jit` compiles each once.

The train step takes the state (donated), a batch sharded over the mesh axis `data`, and, in online
distillation, the frozen teacher's variables. BatchNorm statistics come from the whole global batch
(XLA inserts the cross-device reductions), so any number of devices computes what one device would.
A step whose loss is not finite leaves the state unchanged; the loop sees it in the metrics and stops.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, cast

import jax
import jax.numpy as jnp
import optax
from jax.typing import DTypeLike

from pkd_jax import losses
from pkd_jax.models import Student, Teacher
from pkd_jax.train.build import feature_inputs, model_inputs
from pkd_jax.train.state import TrainState

Batch = dict[str, Any]
Metrics = dict[str, jax.Array]


def select_targets(batch: Batch, targets: tuple[int, ...]) -> Batch:
    """The loss's view of a batch: the configured label columns, the masks and the gate's gamma."""
    view = {"labels": jnp.asarray(batch["labels"])[..., list(targets)]}
    for key in ("label_mask", "frame_mask", "gate_gamma"):
        if key in batch:
            view[key] = jnp.asarray(batch[key])
    return view


def teacher_outputs(
    teacher: Teacher, teacher_variables: Any, batch: Batch, dtype: DTypeLike
) -> tuple[jax.Array, jax.Array]:
    """The frozen teacher in inference mode (running BN statistics, no dropout), without gradients."""
    # Without `mutable`, `apply` returns the module's output alone (flax types it as either).
    pred, emb = cast(
        tuple[jax.Array, jax.Array],
        teacher.apply(teacher_variables, *model_inputs(teacher, batch, dtype), train=False),
    )
    return jax.lax.stop_gradient(pred), jax.lax.stop_gradient(emb)


def loss_and_metrics(result: Any) -> tuple[jax.Array, Metrics]:
    """A loss function's `(loss, metrics)`, checked, with `loss` added to the metrics when missing (a
    user loss may report only some metrics, or none)."""
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], Mapping)):
        raise TypeError(f"a loss function returns (loss, metrics dict), not {type(result).__name__}")
    loss, metrics = result
    shaped = {k: jnp.shape(v) for k, v in metrics.items() if jnp.shape(v) != ()}
    if jnp.shape(loss) != () or shaped:
        raise ValueError(f"a loss and its metrics must be scalars; got loss {jnp.shape(loss)}, {shaped}")
    return loss, {"loss": loss, **metrics}


def make_train_step(
    model: Student | Teacher,
    tx: optax.GradientTransformation,
    loss_fn: losses.LossFn,
    *,
    targets: tuple[int, ...],
    dtype: DTypeLike = jnp.float32,
    teacher: Teacher | None = None,
    teacher_mode: str | None = None,
) -> Callable[[TrainState, Batch, Any], tuple[TrainState, Metrics]]:
    """Builds `train_step(state, batch, teacher_variables) -> (state, metrics)`.

    `teacher_mode` is None (teacher and baseline training), "online" (the teacher runs here on the
    same frames) or "cached" (the batch carries `teacher_pred` and `teacher_emb`).
    """
    if teacher_mode not in (None, "online", "cached"):
        raise ValueError(f"teacher mode {teacher_mode!r}; use 'online' or 'cached'")
    if teacher_mode == "online" and teacher is None:
        raise ValueError("online distillation needs the teacher model")

    def train_step(state: TrainState, batch: Batch, teacher_variables: Any) -> tuple[TrainState, Metrics]:
        dropout_key = jax.random.fold_in(state.rng, state.step)
        inputs = model_inputs(model, batch, dtype)
        features = feature_inputs(model, batch)  # frozen trunks' cached features, where the batch has them
        loss_batch = select_targets(batch, targets)
        extra: dict[str, jax.Array] = {}
        if teacher_mode == "online":
            assert teacher is not None  # checked above
            extra["teacher_pred"], extra["teacher_emb"] = teacher_outputs(
                teacher, teacher_variables, batch, dtype
            )
        elif teacher_mode == "cached":
            extra["teacher_pred"] = jnp.asarray(batch["teacher_pred"], jnp.float32)
            extra["teacher_emb"] = jnp.asarray(batch["teacher_emb"], jnp.float32)

        def objective(params: Any) -> tuple[jax.Array, tuple[Metrics, Any]]:
            apply: Callable[..., Any] = model.apply  # the features are keyword inputs of the model
            (pred, emb), updates = apply(
                {"params": params, "batch_stats": state.batch_stats},
                *inputs,
                **features,
                train=True,
                rngs={"dropout": dropout_key},
                mutable=["batch_stats"],
            )
            loss, metrics = loss_and_metrics(loss_fn({"pred": pred, "emb": emb, **extra}, loss_batch))
            return loss, (metrics, updates["batch_stats"])

        (loss, (metrics, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = dataclasses.replace(
            state,
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=batch_stats,
            opt_state=opt_state,
        )
        finite = jnp.isfinite(loss)
        # A non-finite step must not poison the state that the loop may checkpoint before stopping.
        kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
        new_state = dataclasses.replace(kept, step=state.step + 1)
        metrics = dict(metrics, grad_norm=optax.tree.norm(grads), finite=finite)
        return new_state, metrics

    return train_step


def make_stream_step(model: Student | Teacher, dtype: DTypeLike = jnp.float32) -> Callable:
    """`stream_step(variables, batch, carry) -> (pred, emb, carry)` for chunked inference."""

    def stream_step(variables: Any, batch: Batch, carry: Any) -> tuple[jax.Array, jax.Array, Any]:
        out = model.apply(variables, *model_inputs(model, batch, dtype), carry, train=False, method="stream")
        return cast(tuple[jax.Array, jax.Array, Any], out)  # no `mutable`: the output alone

    return stream_step
