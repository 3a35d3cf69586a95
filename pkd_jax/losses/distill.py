"""Distillation terms per frame: the paper's L_cos (eq. 1), feature regression and response distillation.

Every term takes `outputs` with the student's `pred` [B, T, K] and `emb` [B, T, D] and the teacher's
`teacher_pred` and `teacher_emb`, and `batch` with an optional `frame_mask` [B, T]. Padded frames never
count, the teacher side is under `jax.lax.stop_gradient`, and gradients stay finite for constant or
all-zero embeddings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from pkd_jax.losses.ccc import Array, Batch, Outputs, TermFn, _expand_mask, ccc_loss

COS_EPS = 1e-6  # PyTorch's CosineSimilarity eps in the released code


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
      teacher_emb: [B, T, D], the teacher's embeddings.
      student_emb: [B, T, D], the student's.
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


def embedding_term(fn: Callable[..., Array], **options: Any) -> TermFn:
    """A `compose` term `fn(teacher_emb, emb, frame_mask, **options)`: a distillation function of the
    teacher's and the student's embeddings over the batch's real frames."""

    def term(outputs: Outputs, batch: Batch) -> Array:
        return fn(outputs["teacher_emb"], outputs["emb"], batch.get("frame_mask"), **options)

    return term


def cosine_term(variant: str) -> TermFn:
    """L_cos between teacher and student embeddings over real frames (labels are not needed).

    "per_frame" gives one value per sequence, so per-sequence gates can switch sequences off;
    "flattened" gives the released code's single batch-level value (a per-sequence gate then scales
    it by the share of sequences it keeps).
    """
    return embedding_term(cosine_distillation, variant=variant, per_sequence=variant == "per_frame")


def _frame_weights(mask: Array | None, like: Array) -> Array:
    """[B, T] float weights of real frames for [B, T, ...] inputs."""
    return _expand_mask(mask, like[..., 0])


def _per_sequence_mean(values: Array, w: Array) -> Array:
    """Mean of per-frame `values` [B, T] over each sequence's real frames, [B] (0 without any)."""
    return jnp.sum(jnp.where(w > 0, values, 0.0) * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)


def mse_distillation(teacher_emb: Array, student_emb: Array, mask: Array | None = None) -> Array:
    """FitNets-style feature regression (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015).

    Distils the teacher's embedding itself: the mean over embedding dimensions of (e_student -
    e_teacher)^2, averaged over each sequence's real frames, one value per sequence [B] (a sequence
    without real frames gets 0). The teacher side never receives gradients.

    The widths must match. FitNets' regressor, the learned map from the student's hint layer to the
    teacher's width, is the Student's `embed_features` projection (`head/embed_proj`, a learned linear
    layer, `pkd_jax/models/pkd.py`): set it to the teacher's width to distil a wider or narrower teacher.

    Args:
      teacher_emb: [B, T, D], the teacher's embeddings.
      student_emb: [B, T, D], the student's.
      mask: [B, T], 1 for real frames.
    """
    teacher_emb = jax.lax.stop_gradient(jnp.asarray(teacher_emb, jnp.float32))
    student_emb = jnp.asarray(student_emb, jnp.float32)
    if teacher_emb.shape[-1] != student_emb.shape[-1]:
        raise ValueError(
            f"'mse' distillation needs embeddings of one width: the teacher's is {teacher_emb.shape[-1]}, "
            f"the student's {student_emb.shape[-1]}; set the Student's `embed_features` to "
            f"{teacher_emb.shape[-1]} (a learned linear projection onto the teacher's width)"
        )
    w = _frame_weights(mask, student_emb)
    diff = jnp.where((w > 0)[..., None], student_emb - teacher_emb, 0.0)
    return _per_sequence_mean(jnp.mean(diff * diff, axis=-1), w)


def mse_term() -> TermFn:
    """The "mse" term of `compose`: `mse_distillation` per sequence [B], so per-sequence gates apply."""

    return embedding_term(mse_distillation)


RESPONSE_METRICS = ("ccc", "mse")


def response_distillation(
    teacher_pred: Array, student_pred: Array, mask: Array | None = None, *, metric: str = "ccc"
) -> Array:
    """Response-based distillation: the student's predictions regressed on the teacher's.

    The regression form of Hinton et al.'s response (soft-target) distillation ("Distilling the
    Knowledge in a Neural Network", 2015): with continuous valence and arousal the teacher's outputs
    are the targets. Distils the teacher's predictions [B, T, K] over real frames, one value per
    sequence [B] (0 for a sequence without real frames):
      * "ccc": 1 - CCC(student, teacher) of each sequence, averaged over the K targets (eq. 3 with
        the teacher in place of the labels);
      * "mse": squared difference, averaged over targets and real frames.
    The teacher side never receives gradients.

    Args:
      teacher_pred: [B, T, K], the teacher's predictions.
      student_pred: [B, T, K], the student's.
      mask: [B, T], 1 for real frames.
      metric: "ccc" or "mse".
    """
    teacher_pred = jax.lax.stop_gradient(jnp.asarray(teacher_pred, jnp.float32))
    student_pred = jnp.asarray(student_pred, jnp.float32)
    if metric == "ccc":
        return ccc_loss(student_pred, teacher_pred, mask, per_sequence=True)
    if metric == "mse":
        w = _frame_weights(mask, student_pred)
        diff = jnp.where((w > 0)[..., None], student_pred - teacher_pred, 0.0)
        return _per_sequence_mean(jnp.mean(diff * diff, axis=-1), w)
    raise ValueError(f"unknown response metric {metric!r}; use one of {list(RESPONSE_METRICS)}")


def response_term(metric: str = "ccc") -> TermFn:
    """The "response" ("ccc") and "response_mse" terms of `compose`: per sequence [B]."""
    if metric not in RESPONSE_METRICS:
        raise ValueError(f"unknown response metric {metric!r}; use one of {list(RESPONSE_METRICS)}")

    def term(outputs: Outputs, batch: Batch) -> Array:
        return response_distillation(
            outputs["teacher_pred"], outputs["pred"], batch.get("frame_mask"), metric=metric
        )

    return term
