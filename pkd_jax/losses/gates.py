"""Gates: how much of each term a sequence (or batch) gets, from the teacher's own CCC.

A gate is `gate(teacher_pred, labels, mask) -> GateWeights`: the weights of the CCC and the
distillation terms, scalars (batch level) or one per sequence [B]. Gate contexts say where the gate's
gamma = 1 - CCC(teacher, labels) is measured: "clip" (each training sequence itself), "window" (a
longer stretch of the same video around it, precomputed from the teacher's track and carried in
`batch["gate_gamma"]`, see `pkd_jax.precompute.gate_track`) or "batch" (all frames of the batch flattened).
CCC over a few frames of smooth labels is near 0 for any predictor, so a gate fed clip-level gamma
rarely trusts even a good teacher.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import NamedTuple, Protocol, TypeGuard

import jax
import jax.numpy as jnp

from pkd_jax.losses.ccc import Array, Batch, ccc_loss


class GateWeights(NamedTuple):
    """Weights of the two loss terms; each a scalar (batch level) or [B] (per sequence)."""

    ccc: Array
    distill: Array
    distilled: Array  # 1 where distillation is on, 0 where the gate switched it off
    gamma: Array  # 1 - CCC of the teacher, the gate's input


def gate_none(
    teacher_pred: Array, labels: Array, mask: Array | None, *, alpha: float, gamma: Array | None = None
) -> GateWeights:
    """Eq. 4, no gate: L = alpha * L_cos + (1 - alpha) * L_ccc everywhere.

    `gamma` (default: over the flattened batch) is only reported; it changes nothing.
    """
    gamma = ccc_loss(teacher_pred, labels, mask) if gamma is None else gamma
    return GateWeights(
        jnp.asarray(1.0 - alpha), jnp.asarray(alpha), jnp.asarray(1.0), jax.lax.stop_gradient(gamma)
    )


def gate_paper(
    teacher_pred: Array,
    labels: Array,
    mask: Array | None,
    *,
    alpha: float,
    theta: float,
    gamma: Array | None = None,
) -> GateWeights:
    """The paper's negative-transfer gate (eq. 5-7), per sequence.

    gamma = 1 - CCC(teacher, labels), by default of each sequence itself (the "clip" context; pass
    `gamma` measured elsewhere, see `gate_gamma`). gamma <= theta: the teacher is trusted and
    L = alpha * L_cos + gamma * L_ccc; gamma > theta: the teacher is wrong, L_cos is dropped, L = L_ccc.
    """
    if gamma is None:
        gamma = ccc_loss(teacher_pred, labels, mask, per_sequence=True)
    gamma = jax.lax.stop_gradient(jnp.asarray(gamma, jnp.float32))
    trusted = gamma <= theta
    return GateWeights(
        ccc=jnp.where(trusted, gamma, 1.0),
        distill=jnp.where(trusted, alpha, 0.0),
        distilled=trusted.astype(jnp.float32),
        gamma=gamma,
    )


def gate_released_code(
    teacher_pred: Array,
    labels: Array,
    mask: Array | None,
    *,
    theta: float,
    offset: float = 0.2,
    gamma: Array | None = None,
) -> GateWeights:
    """The gate as the paper's released code implements it, at batch level.

    gamma = 1 - CCC of the teacher, by default over the whole batch (pass `gamma` for another
    context; per-sequence gamma makes the rule per sequence); beta = offset + gamma if gamma <= theta or
    gamma > 1, else 1; L = (1 - beta) * L_ccc + beta * L_cos. Note what that does: a teacher worse than
    theta gives beta = 1, i.e. pure distillation, and an anti-correlated teacher (gamma > 1) gives a
    negative CCC weight. It is offered to reproduce the code, not as a recommendation. `distilled` is 1
    where the first branch was taken.
    """
    if gamma is None:
        gamma = ccc_loss(teacher_pred, labels, mask)
    gamma = jax.lax.stop_gradient(jnp.asarray(gamma, jnp.float32))
    first_branch = (gamma <= theta) | (gamma > 1.0)
    beta = jnp.where(first_branch, offset + gamma, 1.0)
    return GateWeights(1.0 - beta, beta, first_branch.astype(jnp.float32), gamma)


GateFn = Callable[[Array, Array, Array | None], GateWeights]


class ContextGateFn(Protocol):
    """A gate that also takes gamma measured elsewhere (`gamma=None`: its own default context)."""

    def __call__(
        self, teacher_pred: Array, labels: Array, mask: Array | None, /, *, gamma: Array | None = ...
    ) -> GateWeights: ...


GATE_NAMES = ("none", "paper", "released_code")  # the built-in gates of `make_gate`


def make_gate(name: str, *, alpha: float = 0.2, theta: float = 0.2) -> GateFn:
    """The built-in gate `name` with its hyper-parameters bound."""
    gates: dict[str, GateFn] = {
        "none": functools.partial(gate_none, alpha=alpha),
        "paper": functools.partial(gate_paper, alpha=alpha, theta=theta),
        "released_code": functools.partial(gate_released_code, theta=theta),
    }
    assert set(gates) == set(GATE_NAMES)
    if name not in gates:
        raise ValueError(f"unknown gate {name!r}; choose one of {list(GATE_NAMES)} or pass a function")
    return gates[name]


GATE_CONTEXTS = ("clip", "window", "batch")
# Where each built-in gate measures gamma when given none: its defaults above, as `gate_gamma` contexts.
OWN_CONTEXTS = {"none": "batch", "paper": "clip", "released_code": "batch"}


def gate_gamma(context: str, teacher_pred: Array, labels: Array, mask: Array | None, batch: Batch) -> Array:
    """gamma = 1 - CCC(teacher, labels), averaged over targets, measured over `context`.

    "clip": each sequence of the batch on its own, [B]; "batch": all frames of the batch flattened, a
    scalar; "window": `batch["gate_gamma"]` [B], the teacher's CCC over a longer stretch of the same
    video around each sequence, precomputed from its per-frame track (`pkd_jax.precompute.gate_track`).
    """
    if context == "clip":
        return ccc_loss(teacher_pred, labels, mask, per_sequence=True)
    if context == "batch":
        return ccc_loss(teacher_pred, labels, mask)
    if context == "window":
        if batch.get("gate_gamma") is None:
            raise ValueError(
                "gate_context='window' needs batch['gate_gamma'], the teacher's windowed gamma per "
                "sequence (pkd_jax.precompute.gate_track computes it from the teacher's track)"
            )
        return jnp.asarray(batch["gate_gamma"], jnp.float32)
    raise ValueError(f"unknown gate context {context!r}; choose one of {list(GATE_CONTEXTS)}")


def _accepts_gamma(fn: Callable) -> TypeGuard[ContextGateFn]:
    """Whether a gate function takes the `gamma` keyword (user gates opt in to the gate context)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return False
    return any(p.name == "gamma" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
