"""Pure train and evaluation steps; `jax.jit` compiles each once.

The train step takes the state (donated), a batch sharded over the mesh axis `data`, and, in online
distillation, the frozen teachers' variables (a tuple, one per teacher). A student's teachers are always
a sequence (one teacher is the paper): their outputs reach the loss as tuples (`outputs["teacher_pred"][k]`,
`batch["gate_gamma"][k]`), and their precomputed arrays are the batch keys `teacher_pred_<k>`,
`teacher_emb_<k>` and `gate_gamma_<k>` (`teacher_key`). One-stage
distillation (`teacher_mode="joint"`) trains a `TeacherStudent` pair: teacher loss plus, after the
warm-up, the student's distillation loss against the teacher's current outputs, gradient stopped.
BatchNorm statistics come from the whole global batch (XLA inserts the cross-device reductions), so any number of devices computes what one device would.
A step whose loss is not finite leaves the state unchanged; the loop sees it in the metrics and stops.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import optax
from jax.typing import DTypeLike

from pkd_jax import losses
from pkd_jax.models import Network, Teacher, TeacherStudent
from pkd_jax.models.conv import per_member_kernels
from pkd_jax.models.inputs import feature_inputs, model_inputs
from pkd_jax.train.state import TrainState

Batch = dict[str, Any]
Metrics = dict[str, jax.Array]


def teacher_key(name: str, k: int) -> str:
    """The batch key of teacher k's precomputed array `name` (`teacher_pred`, `teacher_emb`, `gate_gamma`)."""
    return f"{name}_{k}"


def cached_teachers(batch: Batch, name: str) -> tuple[Any, ...]:
    """Teachers 0, 1, ... 's arrays `name` that the batch carries, in order."""
    found: list[jax.Array] = []
    while teacher_key(name, len(found)) in batch:
        found.append(jnp.asarray(batch[teacher_key(name, len(found))], jnp.float32))
    return tuple(found)


def select_targets(batch: Batch, targets: tuple[int, ...]) -> Batch:
    """The loss's view of a batch: the configured label columns, the masks, the per-clip `labelled`
    flag (where some training recordings have no labels, `pkd_jax.data.labelled`) and the gates' gammas
    (a tuple, one per teacher, where the batch carries them)."""
    view: Batch = {"labels": jnp.asarray(batch["labels"])[..., list(targets)]}
    for key in ("label_mask", "frame_mask", "labelled"):
        if key in batch:
            view[key] = jnp.asarray(batch[key])
    if gammas := cached_teachers(batch, "gate_gamma"):
        view["gate_gamma"] = gammas
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
    model: Network,
    tx: optax.GradientTransformation,
    loss_fn: losses.LossFn,
    *,
    targets: tuple[int, ...],
    dtype: DTypeLike = jnp.float32,
    teachers: Sequence[Teacher] = (),
    teacher_mode: str | None = None,
    teacher_loss_fn: losses.LossFn | None = None,
    warmup_steps: int = 0,
) -> Callable[[TrainState, Batch, Any], tuple[TrainState, Metrics]]:
    """Builds `train_step(state, batch, teacher_variables) -> (state, metrics)`.

    `teacher_mode` is None (teacher and baseline training), "online" (the frozen `teachers` run here on
    the same frames; `teacher_variables` is the tuple of their variables), "cached" (the batch carries
    each teacher's `teacher_pred_<k>` and `teacher_emb_<k>`) or "joint" (one-stage: `model` is a
    `TeacherStudent`, `teacher_loss_fn` the teacher's loss, and the student's loss counts from step
    `warmup_steps`). The loss sees the frozen teachers' outputs as tuples, one per teacher.
    """
    if teacher_mode not in (None, "online", "cached", "joint"):
        raise ValueError(f"teacher mode {teacher_mode!r}; use 'online', 'cached' or 'joint'")
    if teacher_mode == "online" and not teachers:
        raise ValueError("online distillation needs the teacher models")
    if teacher_mode == "joint" and (not isinstance(model, TeacherStudent) or teacher_loss_fn is None):
        raise ValueError("one-stage distillation needs a TeacherStudent model and the teacher's loss")
    teachers = tuple(teachers)

    def teacher_view(batch: Batch, teacher_variables: Any) -> dict[str, Any]:
        """The frozen teachers' outputs for the loss, a tuple of each."""
        if teacher_mode == "online":
            outs = [
                teacher_outputs(t, v, batch, dtype) for t, v in zip(teachers, teacher_variables, strict=True)
            ]
            return {"teacher_pred": tuple(p for p, _ in outs), "teacher_emb": tuple(e for _, e in outs)}
        if teacher_mode == "cached":
            return {
                "teacher_pred": cached_teachers(batch, "teacher_pred"),
                "teacher_emb": cached_teachers(batch, "teacher_emb"),
            }
        return {}

    def train_step(state: TrainState, batch: Batch, teacher_variables: Any) -> tuple[TrainState, Metrics]:
        dropout_key = jax.random.fold_in(state.rng, state.step)
        inputs = model_inputs(model, batch, dtype)
        features = feature_inputs(model, batch)  # frozen trunks' cached features, where the batch has them
        loss_batch = select_targets(batch, targets)
        extra = teacher_view(batch, teacher_variables)

        def objective(params: Any) -> tuple[jax.Array, tuple[Metrics, Any]]:
            apply: Callable[..., Any] = model.apply  # the features are keyword inputs of the model
            out, updates = apply(
                {"params": params, "batch_stats": state.batch_stats},
                *inputs,
                **features,
                train=True,
                rngs={"dropout": dropout_key},
                mutable=["batch_stats"],
            )
            if teacher_mode == "joint":
                loss, metrics = joint_loss(out, loss_batch, state.step)
            else:
                pred, emb = out
                loss, metrics = loss_and_metrics(loss_fn({"pred": pred, "emb": emb, **extra}, loss_batch))
            return loss, (metrics, updates["batch_stats"])

        def joint_loss(out: Any, loss_batch: Batch, step: jax.Array) -> tuple[jax.Array, Metrics]:
            (pred, emb), (t_pred, t_emb) = out
            assert teacher_loss_fn is not None  # checked when the step was built
            t_loss, _ = loss_and_metrics(teacher_loss_fn({"pred": t_pred, "emb": t_emb}, loss_batch))
            frozen = {
                "teacher_pred": jax.lax.stop_gradient(t_pred),
                "teacher_emb": jax.lax.stop_gradient(t_emb),
            }
            s_loss, s_metrics = loss_and_metrics(loss_fn({"pred": pred, "emb": emb, **frozen}, loss_batch))
            student_on = (step >= warmup_steps).astype(jnp.float32)
            metrics = {**s_metrics, "student_loss": s_loss, "teacher_loss": t_loss, "student_on": student_on}
            metrics["loss"] = t_loss + student_on * s_loss
            return metrics["loss"], metrics

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


def over_members(fn: Callable, in_axes: Any = 0) -> Callable:
    """`jax.vmap(fn)` over the members of a population (`pkd_jax.train.population`), traced under
    `per_member_kernels`: every member has its own convolution kernels."""

    def member_fn(*args: Any) -> Any:
        with per_member_kernels():
            return fn(*args)

    return jax.vmap(member_fn, in_axes=in_axes)


def make_stream_step(model: Network, dtype: DTypeLike = jnp.float32) -> Callable:
    """`stream_step(variables, batch, carry) -> (pred, emb, carry)` for chunked inference."""

    def stream_step(variables: Any, batch: Batch, carry: Any) -> tuple[jax.Array, jax.Array, Any]:
        apply: Callable[..., Any] = model.apply  # the features are keyword inputs of the model
        out = apply(
            variables, *model_inputs(model, batch, dtype), carry, train=False, method="stream",
            **feature_inputs(model, batch),
        )  # fmt: skip
        return cast(tuple[jax.Array, jax.Array, Any], out)  # no `mutable`: the output alone

    return stream_step
