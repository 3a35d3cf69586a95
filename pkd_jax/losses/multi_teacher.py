"""Distillation from several frozen teachers, each with its own gate, combined by a documented rule.

Each teacher k gives, for every training sequence, the single-teacher loss a student of that teacher
alone would get (`compose_parts`): L_k = w_ccc,k * L_ccc + w_cos,k * L_distill,k, where its own gate
(its own gamma_k = 1 - CCC of teacher k, its own theta_k) decides whether it is trusted there. The rules:

  "average": the mean of L_k over the teachers trusted on the sequence; plain L_ccc where none is.
             Two trusted teachers each pull the student's embedding half as hard as one would.
  "best":    L_k of the teacher with the lowest gamma_k on the sequence (the one closest to the labels
             there), gated as usual: plain L_ccc where that teacher is not trusted either.

With one teacher both rules are the single-teacher loss of `compose`. Inputs: `outputs["teacher_pred"]`
and `outputs["teacher_emb"]` are sequences of K arrays (one per teacher, same shapes), and where the
gates need it `batch["gate_gamma"]` is a sequence of K arrays too.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from pkd_jax.losses.ccc import Array, Batch, LossFn, Outputs
from pkd_jax.losses.compose import PartsFn, sequence_weights

COMBINE_RULES = ("average", "best")


def combine_teachers(parts: Sequence[PartsFn], rule: str = "average") -> LossFn:
    """`loss_fn(outputs, batch) -> (loss, metrics)` over the teachers whose `parts` are given.

    Metrics: `loss`, `ccc_loss`, `cos_loss` (the distillation term of the teachers used, by the rule's
    weights), `distilled_fraction` (share of sequences distilled from at least one teacher) and, per
    teacher k, `distilled_fraction_k` (its gate passed), `teacher_gamma_k` and `used_fraction_k`
    (share of sequences whose loss used it).
    """
    if rule not in COMBINE_RULES:
        raise ValueError(f"unknown rule {rule!r} for combining teachers; choose one of {COMBINE_RULES}")
    if not parts:
        raise ValueError("combine_teachers needs at least one teacher")

    def loss_fn(outputs: Outputs, batch: Batch) -> tuple[Array, dict[str, Array]]:
        preds, embs = outputs["teacher_pred"], outputs["teacher_emb"]
        gammas = batch.get("gate_gamma")
        if len(preds) != len(parts) or len(embs) != len(parts):
            raise ValueError(f"{len(parts)} teachers' gates, but outputs of {len(preds)} teachers")
        seq = sequence_weights(batch)
        count = jnp.maximum(jnp.sum(seq), 1.0)
        mean = lambda x: jnp.sum(seq * jnp.broadcast_to(x, seq.shape)) / count
        per_teacher = []
        l_ccc = None
        for k, part in enumerate(parts):
            view = {**outputs, "teacher_pred": preds[k], "teacher_emb": embs[k]}
            batch_k = {**batch, "gate_gamma": gammas[k]} if gammas is not None else batch
            l_ccc, l_cos, w = part(view, batch_k)
            wide = lambda x: jnp.broadcast_to(x, seq.shape)
            total = wide(w.ccc * l_ccc + w.cos * l_cos)
            per_teacher.append((total, wide(l_cos), wide(w.distilled), wide(w.gamma)))
        assert l_ccc is not None  # at least one teacher
        totals, cos_parts, trusted, gamma = (jnp.stack(x) for x in zip(*per_teacher, strict=True))  # [K, B]
        plain = jnp.broadcast_to(l_ccc, seq.shape)
        if rule == "average":
            n = jnp.sum(trusted, axis=0)
            use = trusted / jnp.maximum(n, 1.0)  # each trusted teacher's share
            loss_seq = jnp.where(n > 0, jnp.sum(use * totals, axis=0), plain)
            distilled = (n > 0).astype(jnp.float32)
        else:  # "best"
            use = jax.nn.one_hot(jnp.argmin(jax.lax.stop_gradient(gamma), axis=0), len(parts), axis=0)
            loss_seq = jnp.sum(use * totals, axis=0)
            distilled = jnp.sum(use * trusted, axis=0)
        loss = mean(loss_seq)
        metrics = {
            "loss": loss,
            "ccc_loss": mean(plain),
            "cos_loss": mean(jnp.sum(use * cos_parts, axis=0)),
            "distilled_fraction": mean(distilled),
        }
        for k in range(len(parts)):
            metrics[f"distilled_fraction_{k}"] = mean(trusted[k])
            metrics[f"teacher_gamma_{k}"] = mean(gamma[k])
            metrics[f"used_fraction_{k}"] = mean(use[k] > 0)
        return loss, metrics

    return loss_fn
