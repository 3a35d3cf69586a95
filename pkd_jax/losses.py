"""Losses of privileged knowledge distillation, as small pure functions that compose.

Conventions:
  * predictions and labels are [B, T, K] (K targets, e.g. valence and arousal), embeddings [B, T, D];
  * `outputs` holds the student's `pred` and `emb` and, when distilling, the frozen teacher's
    `teacher_pred` and `teacher_emb`;
  * `batch` holds `labels` [B, T, K] and optionally `label_mask` [B, T] (1 where the label is valid,
    e.g. not Aff-Wild2's -5) and `frame_mask` [B, T] (1 for a real frame, 0 for padding).

A loss *term* is `term(outputs, batch) -> values`, either a scalar (computed over the whole batch) or
one value per sequence [B]. A *gate* is `gate(teacher_pred, labels, mask) -> GateWeights`: the weights
of the CCC and the distillation terms, again scalars or per sequence. `compose` combines them as

    loss = mean over valid sequences of (w_ccc * L_ccc + w_cos * L_cos)

with broadcasting, so batch-level and per-sequence pieces mix freely. Built-in names:
  * CCC terms: "flattened" (CCC over all frames of the batch, per target) or "per_sequence";
  * distillation terms: "per_frame" (1 - cosine per frame, averaged) or "flattened" (the released
    code: one cosine between the whole batch's embeddings flattened into single vectors);
  * gates: "none" (eq. 4: alpha * L_cos + (1 - alpha) * L_ccc), "paper" (eq. 5-7, per sequence) and
    "released_code" (the batch-level rule of the paper's released code);
  * gate contexts, where the gate's gamma = 1 - CCC(teacher, labels) is measured: "clip" (each training
    sequence itself), "window" (a longer stretch of the same video around it, precomputed from the
    teacher's track and carried in `batch["gate_gamma"]`, see `pkd_jax.train.gate_track`) or "batch"
    (all frames of the batch flattened). CCC over a few frames of smooth labels is near 0 for any
    predictor, so a gate fed clip-level gamma rarely trusts even a good teacher.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
Outputs = Mapping[str, Array]
Batch = Mapping[str, Any]
TermFn = Callable[[Outputs, Batch], Array]
LossFn = Callable[[Outputs, Batch], tuple[Array, dict[str, Array]]]

CCC_EPS = 1e-8
COS_EPS = 1e-6  # PyTorch's CosineSimilarity eps in the released code


def _expand_mask(mask: Array | None, like: Array) -> Array:
    """A float mask broadcast to `like`'s shape; frame masks [B, T] gain trailing axes."""
    if mask is None:
        return jnp.ones(like.shape, jnp.float32)
    mask = jnp.asarray(mask, jnp.float32)
    mask = mask.reshape(mask.shape + (1,) * (like.ndim - mask.ndim))
    return jnp.broadcast_to(mask, like.shape)


def ccc(
    pred: Array,
    target: Array,
    mask: Array | None = None,
    axis: int | tuple[int, ...] | None = None,
    eps: float = CCC_EPS,
) -> Array:
    """Concordance correlation coefficient (eq. 3) over `axis` (all axes when None).

    CCC = 2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2), with population moments over the
    frames where `mask` is 1. `eps` in the denominator keeps constant inputs finite: CCC is 0 then, with
    finite gradients. Masked positions may hold anything, NaN included; they are zeroed before use.

    Args:
      pred, target: arrays of the same shape, e.g. [B, T, K].
      mask: 1 for frames that count; any prefix shape of `pred` ([B, T] for [B, T, K]) or its full shape.
      axis: the axes to reduce: (0, 1) for CCC over the flattened batch per target, 1 per sequence.
      eps: stabiliser in the denominator.

    Returns:
      CCC with the `axis` dimensions removed.
    """
    pred = jnp.asarray(pred, jnp.float32)
    target = jnp.asarray(target, jnp.float32)
    w = _expand_mask(mask, pred)
    valid = w > 0
    pred = jnp.where(valid, pred, 0.0)
    target = jnp.where(valid, target, 0.0)
    n = jnp.maximum(jnp.sum(w, axis=axis, keepdims=True), 1.0)
    mean_p = jnp.sum(w * pred, axis=axis, keepdims=True) / n
    mean_t = jnp.sum(w * target, axis=axis, keepdims=True) / n
    dp = w * (pred - mean_p)
    dt = w * (target - mean_t)
    var_p = jnp.sum(dp * dp, axis=axis, keepdims=True) / n
    var_t = jnp.sum(dt * dt, axis=axis, keepdims=True) / n
    cov = jnp.sum(dp * dt, axis=axis, keepdims=True) / n
    value = 2.0 * cov / (var_p + var_t + (mean_p - mean_t) ** 2 + eps)
    return jnp.squeeze(value, axis=axis) if axis is not None else value.reshape(())


def ccc_loss(pred: Array, target: Array, mask: Array | None = None, *, per_sequence: bool = False) -> Array:
    """1 - CCC for [B, T, K] inputs, averaged over targets.

    Returns a scalar computed over the flattened batch, or with `per_sequence` one value per
    sequence [B] (a sequence with no valid frame gets 0).
    """
    if per_sequence:
        values = 1.0 - ccc(pred, target, mask, axis=1)  # [B, K]
        has_frames = jnp.sum(_expand_mask(mask, pred), axis=1) > 0
        return jnp.mean(jnp.where(has_frames, values, 0.0), axis=-1)
    return jnp.mean(1.0 - ccc(pred, target, mask, axis=tuple(range(pred.ndim - 1))))


def _cosine(a: Array, b: Array, axis: int | tuple[int, ...], eps: float) -> Array:
    # sqrt(max(|a|^2 |b|^2, eps^2)) rather than |a| |b| keeps gradients finite for zero vectors.
    dot = jnp.sum(a * b, axis=axis)
    norms = jnp.sum(a * a, axis=axis) * jnp.sum(b * b, axis=axis)
    return dot / jnp.sqrt(jnp.maximum(norms, eps * eps))


def cosine_distillation(
    teacher_emb: Array,
    student_emb: Array,
    mask: Array | None = None,
    *,
    variant: str = "per_frame",
    per_sequence: bool = False,
    eps: float = COS_EPS,
) -> Array:
    """L_cos = 1 - cos(e_teacher, e_student) (eq. 1). The teacher side never receives gradients.

    Args:
      teacher_emb, student_emb: [B, T, D].
      mask: [B, T], 1 for frames that count.
      variant: "per_frame": cosine per frame, averaged over valid frames; "flattened": the released
        code's single cosine between the batch's embeddings flattened into one vector each.
      per_sequence: return one value per sequence [B] ("per_frame" averages within each sequence,
        "flattened" flattens each sequence) instead of a scalar.
      eps: PyTorch's CosineSimilarity eps.
    """
    teacher_emb = jax.lax.stop_gradient(jnp.asarray(teacher_emb, jnp.float32))
    student_emb = jnp.asarray(student_emb, jnp.float32)
    w = _expand_mask(mask, student_emb[..., 0])  # [B, T]
    if variant == "per_frame":
        distance = (1.0 - _cosine(teacher_emb, student_emb, -1, eps)) * w
        if per_sequence:
            return jnp.sum(distance, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)
        return jnp.sum(distance) / jnp.maximum(jnp.sum(w), 1.0)
    if variant == "flattened":
        t, s = teacher_emb * w[..., None], student_emb * w[..., None]
        axis = (1, 2) if per_sequence else (0, 1, 2)
        return 1.0 - _cosine(t, s, axis, eps)
    raise ValueError(f"unknown cosine distillation variant {variant!r}; use 'per_frame' or 'flattened'")


# ---------------------------------------------------------------------------------------------------
# Gates: how much of each term a sequence (or batch) gets, from the teacher's own CCC.


class GateWeights(NamedTuple):
    """Weights of the two loss terms; each a scalar (batch level) or [B] (per sequence)."""

    ccc: Array
    cos: Array
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
        cos=jnp.where(trusted, alpha, 0.0),
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


def make_gate(name: str, *, alpha: float = 0.2, theta: float = 0.2) -> GateFn:
    """The built-in gate `name` with its hyper-parameters bound."""
    gates: dict[str, GateFn] = {
        "none": functools.partial(gate_none, alpha=alpha),
        "paper": functools.partial(gate_paper, alpha=alpha, theta=theta),
        "released_code": functools.partial(gate_released_code, theta=theta),
    }
    if name not in gates:
        raise ValueError(f"unknown gate {name!r}; choose one of {sorted(gates)} or pass a function")
    return gates[name]


GATE_CONTEXTS = ("clip", "window", "batch")


def gate_gamma(context: str, teacher_pred: Array, labels: Array, mask: Array | None, batch: Batch) -> Array:
    """gamma = 1 - CCC(teacher, labels), averaged over targets, measured over `context`.

    "clip": each sequence of the batch on its own, [B]; "batch": all frames of the batch flattened, a
    scalar; "window": `batch["gate_gamma"]` [B], the teacher's CCC over a longer stretch of the same
    video around each sequence, precomputed from its per-frame track (`pkd_jax.train.gate_track`).
    """
    if context == "clip":
        return ccc_loss(teacher_pred, labels, mask, per_sequence=True)
    if context == "batch":
        return ccc_loss(teacher_pred, labels, mask)
    if context == "window":
        if batch.get("gate_gamma") is None:
            raise ValueError(
                "gate_context='window' needs batch['gate_gamma'], the teacher's windowed gamma per "
                "sequence (pkd_jax.train.gate_track computes it from the teacher's track)"
            )
        return jnp.asarray(batch["gate_gamma"], jnp.float32)
    raise ValueError(f"unknown gate context {context!r}; choose one of {list(GATE_CONTEXTS)}")


def _accepts_gamma(fn: Callable) -> bool:
    """Whether a gate function takes the `gamma` keyword (user gates opt in to the gate context)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return False
    return any(p.name == "gamma" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _masked_quantiles(values: Array, weights: Array, qs: tuple[float, ...]) -> list[Array]:
    """Quantiles of `values` [B] over the sequences with weight > 0."""
    kept = jnp.where(weights > 0, values, jnp.nan)
    return [jnp.nan_to_num(jnp.nanquantile(kept, q)) for q in qs]


# ---------------------------------------------------------------------------------------------------
# Terms over (outputs, batch) and their composition.


def label_mask(batch: Batch) -> Array | None:
    """Frames whose label counts: `label_mask` times `frame_mask`, whichever are present."""
    masks = [batch[k] for k in ("label_mask", "frame_mask") if batch.get(k) is not None]
    if not masks:
        return None
    return functools.reduce(lambda a, b: jnp.asarray(a, jnp.float32) * b, masks)


def ccc_term(reduction: str) -> TermFn:
    """L_ccc of the student's predictions, "flattened" over the batch or "per_sequence"."""
    if reduction not in ("flattened", "per_sequence"):
        raise ValueError(f"unknown CCC reduction {reduction!r}; use 'flattened' or 'per_sequence'")
    per_sequence = reduction == "per_sequence"

    def term(outputs: Outputs, batch: Batch) -> Array:
        return ccc_loss(outputs["pred"], batch["labels"], label_mask(batch), per_sequence=per_sequence)

    return term


def cosine_term(variant: str) -> TermFn:
    """L_cos between teacher and student embeddings over real frames (labels are not needed).

    "per_frame" gives one value per sequence, so per-sequence gates can switch sequences off;
    "flattened" gives the released code's single batch-level value (a per-sequence gate then scales
    it by the share of sequences it keeps).
    """
    per_sequence = variant == "per_frame"

    def term(outputs: Outputs, batch: Batch) -> Array:
        return cosine_distillation(
            outputs["teacher_emb"],
            outputs["emb"],
            batch.get("frame_mask"),
            variant=variant,
            per_sequence=per_sequence,
        )

    return term


def _sequence_weights(batch: Batch) -> Array:
    """1 for sequences with at least one labelled frame; those are averaged over."""
    mask = label_mask(batch)
    labels = batch["labels"]
    if mask is None:
        return jnp.ones(labels.shape[:1], jnp.float32)
    return (jnp.sum(_expand_mask(mask, labels[..., 0]), axis=1) > 0).astype(jnp.float32)


def compose(
    *,
    ccc: str | TermFn = "flattened",
    distill: str | TermFn | None = "per_frame",
    gate: str | GateFn = "paper",
    alpha: float = 0.2,
    theta: float = 0.2,
    gate_context: str | None = None,
) -> LossFn:
    """Builds `loss_fn(outputs, batch) -> (loss, metrics)` from names or functions.

    Args:
      ccc: "flattened", "per_sequence" or a term function.
      distill: "per_frame", "flattened" (released code), a term function, or None for plain CCC
        training (teacher and visual-only baseline); then `gate` is unused.
      gate: "none", "paper", "released_code" or a function (teacher_pred, labels, mask) -> GateWeights.
      alpha: weight of L_cos in the "none" and "paper" gates.
      theta: threshold on gamma = 1 - CCC_teacher in the "paper" and "released_code" gates.
      gate_context: where gamma is measured: "clip", "window" or "batch" (see `gate_gamma`); None: each
        built-in gate's own (the paper gate per clip, the released code's over the batch). A user gate
        receives it as the keyword `gamma` if its signature has one; otherwise a context is an error.

    Metrics: `loss`, `ccc_loss`, and when distilling `cos_loss`, `distilled_fraction` (share of
    sequences, or batches for batch-level gates, where distillation was on), `teacher_gamma`,
    `ccc_weight` and `cos_weight` (means), and `gamma_q10`, `gamma_q50`, `gamma_q90` (quantiles of
    gamma over the batch's sequences).
    """
    ccc_fn = ccc_term(ccc) if isinstance(ccc, str) else ccc
    if distill is None:

        def ccc_only(outputs: Outputs, batch: Batch) -> tuple[Array, dict[str, Array]]:
            seq = _sequence_weights(batch)
            value = jnp.broadcast_to(ccc_fn(outputs, batch), seq.shape)
            loss = jnp.sum(seq * value) / jnp.maximum(jnp.sum(seq), 1.0)
            return loss, {"loss": loss, "ccc_loss": loss}

        return ccc_only

    cos_fn = cosine_term(distill) if isinstance(distill, str) else distill
    gate_fn = make_gate(gate, alpha=alpha, theta=theta) if isinstance(gate, str) else gate
    if gate_context is not None:
        if gate_context not in GATE_CONTEXTS:
            raise ValueError(f"unknown gate context {gate_context!r}; choose one of {list(GATE_CONTEXTS)}")
        if not _accepts_gamma(gate_fn):
            raise ValueError(
                f"gate {getattr(gate_fn, '__name__', gate_fn)!r} takes no `gamma` keyword, so it cannot "
                f"use gate_context={gate_context!r}; add `gamma=None` to its signature or drop the context"
            )

    def loss_fn(outputs: Outputs, batch: Batch) -> tuple[Array, dict[str, Array]]:
        seq = _sequence_weights(batch)
        count = jnp.maximum(jnp.sum(seq), 1.0)
        mean = lambda x: jnp.sum(seq * jnp.broadcast_to(x, seq.shape)) / count
        l_ccc, l_cos = ccc_fn(outputs, batch), cos_fn(outputs, batch)
        teacher_pred, labels, mask = outputs["teacher_pred"], batch["labels"], label_mask(batch)
        if gate_context is None:
            weights = gate_fn(teacher_pred, labels, mask)
        else:
            gamma = gate_gamma(gate_context, teacher_pred, labels, mask, batch)
            weights = gate_fn(teacher_pred, labels, mask, gamma=gamma)
        loss = mean(weights.ccc * l_ccc + weights.cos * l_cos)
        q10, q50, q90 = _masked_quantiles(jnp.broadcast_to(weights.gamma, seq.shape), seq, (0.1, 0.5, 0.9))
        metrics = {
            "loss": loss,
            "ccc_loss": mean(l_ccc),
            "cos_loss": mean(l_cos),
            "distilled_fraction": mean(weights.distilled),
            "teacher_gamma": mean(weights.gamma),
            "ccc_weight": mean(weights.ccc),
            "cos_weight": mean(weights.cos),
            "gamma_q10": q10,
            "gamma_q50": q50,
            "gamma_q90": q90,
        }
        return loss, metrics

    return loss_fn
