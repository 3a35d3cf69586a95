"""`compose`: the student's loss from a CCC term, a distillation term and a gate, by name or function,
for one teacher or several (`combine_teachers`; one teacher is the paper).

Teacher k gives, for every training sequence, the pieces of its single-teacher loss (`compose_parts`):
L_k = w_ccc,k * L_ccc + w_distill,k * L_distill,k, where its own gate (its own gamma_k = 1 - CCC of
teacher k, its own theta_k) decides whether it is trusted there. The loss is

    loss = mean over valid sequences of  sum_k u_k * L_k

with broadcasting, so batch-level and per-sequence pieces mix freely: a per-sequence term [B] gets each
sequence's gate weight; a batch-level (scalar) term is broadcast over the sequences, i.e. scaled by the
mean gate weight of the valid sequences. The teachers' shares u_k (summing to 1) follow `rule`:

  "average": the teachers trusted on the sequence, in proportion to their gates' trust; where none is,
             all teachers equally (each then gives its gate's no-distillation loss: plain L_ccc for the
             paper's gate). Two trusted teachers each pull the student's embedding half as hard as one.
  "best":    the teacher with the lowest gamma_k on the sequence (closest to the labels there), gated
             as usual.

With one teacher both rules give u_1 = 1: the loss is L_1, the paper's.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from pkd_jax.losses.ccc import Array, Batch, LossFn, Outputs, TermFn, _expand_mask, ccc_term, label_mask
from pkd_jax.losses.distill import cosine_term, mse_term, response_term
from pkd_jax.losses.gates import (
    GATE_CONTEXTS,
    OWN_CONTEXTS,
    ContextGateFn,
    GateFn,
    GateWeights,
    _accepts_gamma,
    gate_gamma,
    make_gate,
)
from pkd_jax.losses.labelled import labelled_flags, student_sequences, unlabelled_gamma, without_supervision
from pkd_jax.losses.pkdot import pkdot_term
from pkd_jax.losses.relational import rkd_term, similarity_term

# name -> (factory(**options) -> term, level): "sequence" terms give one value per sequence [B], so a
# per-sequence gate weighs each sequence; "batch" terms give a scalar, scaled by the mean gate weight.
DISTILL_TERMS: dict[str, tuple[Callable[..., TermFn], str]] = {
    "per_frame": (functools.partial(cosine_term, "per_frame"), "sequence"),  # the paper's L_cos
    "flattened_cosine": (functools.partial(cosine_term, "flattened"), "batch"),  # the released code's L_cos
    "mse": (mse_term, "sequence"),  # FitNets feature regression
    "similarity": (similarity_term, "batch"),  # similarity-preserving KD
    "rkd": (rkd_term, "batch"),  # relational KD: distances and angles
    "pkdot": (pkdot_term, "batch"),  # PKDOT: Sinkhorn divergence of similarity structures
    "response": (functools.partial(response_term, metric="ccc"), "sequence"),  # 1 - CCC to the teacher
    "response_mse": (functools.partial(response_term, metric="mse"), "sequence"),  # squared error
}


def distill_term(name: str, options: Mapping[str, Any] | None = None) -> TermFn:
    """The registered distillation term `name`, its factory called with `options` as keywords."""
    if name not in DISTILL_TERMS:
        raise ValueError(f"unknown distillation term {name!r}; choose one of {sorted(DISTILL_TERMS)}")
    factory, _ = DISTILL_TERMS[name]
    options = dict(options or {})
    accepted = list(inspect.signature(factory).parameters)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"distillation term {name!r} takes no option {unknown}; its options: {accepted}")
    return factory(**options)


def _masked_quantiles(values: Array, weights: Array, qs: tuple[float, ...]) -> list[Array]:
    """Quantiles of `values` [B] over the sequences with weight > 0."""
    kept = jnp.where(weights > 0, values, jnp.nan)
    return [jnp.nan_to_num(jnp.nanquantile(kept, q)) for q in qs]


def sequence_weights(batch: Batch) -> Array:
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
    distill_options: Mapping[str, Any] | None = None,
) -> LossFn:
    """Builds `loss_fn(outputs, batch) -> (loss, metrics)` from names or functions.

    Args:
      ccc: "flattened", "per_sequence" or a term function.
      distill: a name of `DISTILL_TERMS` ("per_frame", "flattened_cosine" (released code), ...), a term
        function, or None for plain CCC training (teacher and visual-only baseline); then `gate` is unused.
      gate: "none", "paper", "released_code" or a function (teacher_pred, labels, mask) -> GateWeights.
      alpha: weight of L_cos in the "none" and "paper" gates.
      theta: threshold on gamma = 1 - CCC_teacher in the "paper" and "released_code" gates.
      gate_context: where gamma is measured: "clip", "window" or "batch" (see `gate_gamma`); None: each
        built-in gate's own (the paper gate per clip, the released code's over the batch). A user gate
        receives it as the keyword `gamma` if its signature has one; otherwise a context is an error.
      distill_options: keywords for a named term's factory (e.g. {"k": 30, "blur": 0.1} for "pkdot");
        only with a name.

    Metrics: `loss`, `ccc_loss`, and when distilling those of `combine_teachers`.
    """
    ccc_fn = ccc_term(ccc) if isinstance(ccc, str) else ccc
    if distill is None:

        def ccc_only(outputs: Outputs, batch: Batch) -> tuple[Array, dict[str, Array]]:
            seq = sequence_weights(batch)
            value = jnp.broadcast_to(ccc_fn(outputs, batch), seq.shape)
            loss = jnp.sum(seq * value) / jnp.maximum(jnp.sum(seq), 1.0)
            return loss, {"loss": loss, "ccc_loss": loss}

        return ccc_only

    parts = compose_parts(
        ccc=ccc_fn, distill=distill, gate=gate, alpha=alpha, theta=theta, gate_context=gate_context,
        distill_options=distill_options,
    )  # fmt: skip
    return combine_teachers([parts])


# (l_ccc, l_distill, gate weights) of one teacher: the pieces `compose` weighs and averages.
PartsFn = Callable[[Outputs, Batch], tuple[Array, Array, GateWeights]]


def compose_parts(
    *,
    ccc: str | TermFn = "flattened",
    distill: str | TermFn = "per_frame",
    gate: str | GateFn = "paper",
    alpha: float = 0.2,
    theta: float = 0.2,
    gate_context: str | None = None,
    distill_options: Mapping[str, Any] | None = None,
) -> PartsFn:
    """`parts(outputs, batch) -> (L_ccc, L_distill, GateWeights)`, unweighted: what `compose` combines
    for one teacher (arguments as in `compose`), combined over the teachers by `combine_teachers`."""
    ccc_fn = ccc_term(ccc) if isinstance(ccc, str) else ccc
    if isinstance(distill, str):
        cos_fn = distill_term(distill, distill_options)
    elif distill_options:
        raise ValueError("distill_options apply to a named distillation term, not to a function")
    else:
        cos_fn = distill
    gate_fn = make_gate(gate, alpha=alpha, theta=theta) if isinstance(gate, str) else gate
    context_gate: ContextGateFn | None = None  # gate_fn, known to take `gamma`, with a gate context
    # Batches with unlabelled clips give the gate gamma from outside, so a built-in gate with no context
    # gets its own (`pkd_jax.losses.labelled`); a user gate without one sees their labels masked.
    open_context = gate_context or (OWN_CONTEXTS.get(gate) if isinstance(gate, str) else None)
    if open_context is not None and gate_context is None and _accepts_gamma(gate_fn):
        context_gate = gate_fn
    if gate_context is not None:
        if gate_context not in GATE_CONTEXTS:
            raise ValueError(f"unknown gate context {gate_context!r}; choose one of {list(GATE_CONTEXTS)}")
        if not _accepts_gamma(gate_fn):
            raise ValueError(
                f"gate {getattr(gate_fn, '__name__', gate_fn)!r} takes no `gamma` keyword, so it cannot "
                f"use gate_context={gate_context!r}; add `gamma=None` to its signature or drop the context"
            )
        context_gate = gate_fn

    def parts(outputs: Outputs, batch: Batch) -> tuple[Array, Array, GateWeights]:
        l_ccc, l_cos = ccc_fn(outputs, batch), cos_fn(outputs, batch)
        teacher_pred, labels, mask = outputs["teacher_pred"], batch["labels"], label_mask(batch)
        # Without unlabelled clips (no `labelled` key) this is the loss as it always was.
        context = gate_context if labelled_flags(batch) is None else open_context
        if context is None:
            weights = gate_fn(teacher_pred, labels, mask)
        else:
            assert context_gate is not None  # set with a context
            gamma = unlabelled_gamma(gate_gamma(context, teacher_pred, labels, mask, batch), batch)
            weights = context_gate(teacher_pred, labels, mask, gamma=gamma)
        return l_ccc, l_cos, without_supervision(weights, batch)

    return parts


COMBINE_RULES = ("average", "best")


def combine_teachers(parts: Sequence[PartsFn], rule: str = "average") -> LossFn:
    """`loss_fn(outputs, batch) -> (loss, metrics)` over the teachers whose `parts` are given.

    `outputs["teacher_pred"]` and `outputs["teacher_emb"]`, and `batch["gate_gamma"]` where a gate reads
    it, hold one array per teacher (a tuple), or a single array for a single teacher.

    Metrics, means over the valid sequences, each teacher weighed by its share u_k: `loss`, `ccc_loss`,
    `distill_loss` (the distillation term, whichever it is), `distilled_fraction` (share of sequences,
    or batches for batch-level gates, distilled from at least one teacher), `teacher_gamma`,
    `ccc_weight` and `distill_weight`, and `gamma_q10`, `gamma_q50`, `gamma_q90` (quantiles of gamma
    over the batch's sequences). With several teachers also, per teacher k, `distilled_fraction_k` (its
    gate passed), `teacher_gamma_k` and `used_fraction_k` (share of sequences whose loss used it).
    """
    if rule not in COMBINE_RULES:
        raise ValueError(f"unknown rule {rule!r} for combining teachers; choose one of {COMBINE_RULES}")
    if not parts:
        raise ValueError("combine_teachers needs at least one teacher")
    count_k = len(parts)

    def per_teacher(x: Any) -> tuple[Any, ...]:
        return tuple(x) if isinstance(x, (tuple, list)) else (x,)

    def loss_fn(outputs: Outputs, batch: Batch) -> tuple[Array, dict[str, Array]]:
        preds, embs = per_teacher(outputs["teacher_pred"]), per_teacher(outputs["teacher_emb"])
        gammas = per_teacher(batch["gate_gamma"]) if "gate_gamma" in batch else None
        if len(preds) != count_k or len(embs) != count_k:
            raise ValueError(f"{count_k} teachers' gates, but outputs of {len(preds)} teachers")
        seq = student_sequences(batch, sequence_weights(batch))  # unlabelled clips too, for distillation
        count = jnp.maximum(jnp.sum(seq), 1.0)
        wide = lambda x: jnp.broadcast_to(x, seq.shape)
        mean = lambda x: jnp.sum(seq * wide(x)) / count
        # The teacher's gamma is a measure against labels: reported over the labelled clips alone.
        flags = labelled_flags(batch)
        judged = seq if flags is None else seq * flags
        judged_mean = (
            mean if flags is None else lambda x: jnp.sum(judged * wide(x)) / jnp.maximum(jnp.sum(judged), 1.0)
        )
        per: dict[str, list[Array]] = {}  # per teacher, each [B]
        for k, part in enumerate(parts):
            view = {**outputs, "teacher_pred": preds[k], "teacher_emb": embs[k]}
            batch_k = {**batch, "gate_gamma": gammas[k]} if gammas is not None else batch
            l_ccc, l_distill, w = part(view, batch_k)
            pieces = {
                # "total" is the two parts' sum, kept whole so that a run without unlabelled clips sums
                # its loss exactly as before (several teachers would round otherwise).
                "total": w.ccc * l_ccc + w.distill * l_distill,
                "supervised": w.ccc * l_ccc, "distilling": w.distill * l_distill,
                "ccc_loss": l_ccc, "distill_loss": l_distill,
                "trusted": w.distilled, "gamma": w.gamma, "ccc_weight": w.ccc, "distill_weight": w.distill,
            }  # fmt: skip
            for name, value in pieces.items():
                per.setdefault(name, []).append(wide(value))
        trusted_k, gamma_k = jnp.stack(per["trusted"]), jnp.stack(per["gamma"])  # [K, B]
        if rule == "average":
            n = jnp.sum(trusted_k, axis=0)
            use = jnp.where(n > 0, trusted_k / jnp.where(n > 0, n, 1.0), 1.0 / count_k)
            distilled = jnp.max(trusted_k, axis=0)
        else:  # "best"
            use = jax.nn.one_hot(jnp.argmin(jax.lax.stop_gradient(gamma_k), axis=0), count_k, axis=0)
            distilled = jnp.sum(use * trusted_k, axis=0)
        used = lambda name: jnp.sum(use * jnp.stack(per[name]), axis=0)  # [B], by the teachers' shares
        if flags is None:
            loss = mean(used("total"))
        else:  # the supervised term over the labelled clips, as a baseline has it; distillation over all
            loss = judged_mean(used("supervised")) + mean(used("distilling"))
        gamma_used = used("gamma")
        q10, q50, q90 = _masked_quantiles(gamma_used, judged, (0.1, 0.5, 0.9))
        metrics = {
            "loss": loss,
            "ccc_loss": judged_mean(used("ccc_loss")),
            "distill_loss": mean(used("distill_loss")),
            "distilled_fraction": mean(distilled),
            "teacher_gamma": judged_mean(gamma_used),
            "ccc_weight": mean(used("ccc_weight")),
            "distill_weight": mean(used("distill_weight")),
            "gamma_q10": q10,
            "gamma_q50": q50,
            "gamma_q90": q90,
        }
        if count_k > 1:  # each teacher's own share and gate
            for k in range(count_k):
                metrics[f"distilled_fraction_{k}"] = mean(trusted_k[k])
                metrics[f"teacher_gamma_{k}"] = judged_mean(gamma_k[k])
                metrics[f"used_fraction_{k}"] = mean(use[k] > 0)
        return loss, metrics

    return loss_fn
