"""Relation-based distillation: the teacher's structure over the batch's frames, not its embeddings.

Both terms work over the batch's N real frames: B * T frames flattened, padding dropped by weights
rather than by indexing, so shapes stay static under jit. Teacher and student widths may differ. Both
are batch-level (scalars): under a per-sequence gate, `compose` scales them by the mean gate weight.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pkd_jax.losses.ccc import Array, TermFn, _expand_mask
from pkd_jax.losses.distill import embedding_term

NORM_EPS = 1e-8
RKD_DISTANCE_WEIGHT = 1.0  # lambda_D of Park et al.
RKD_ANGLE_WEIGHT = 2.0  # lambda_A of Park et al.


def _flat_frames(teacher_emb: Array, student_emb: Array, mask: Array | None) -> tuple[Array, Array, Array]:
    """Teacher (no gradient) and student frames [N, D] with padded rows zeroed, and weights [N]."""
    teacher = jax.lax.stop_gradient(jnp.asarray(teacher_emb, jnp.float32))
    student = jnp.asarray(student_emb, jnp.float32)
    w = _expand_mask(mask, student[..., 0]).reshape(-1)
    keep = (w > 0)[:, None]
    t = jnp.where(keep, teacher.reshape(w.shape[0], -1), 0.0)
    s = jnp.where(keep, student.reshape(w.shape[0], -1), 0.0)
    return t, s, w


def _unit(x: Array, axis: int = -1, eps: float = NORM_EPS) -> Array:
    """`x` scaled to unit L2 norm along `axis`; zero vectors stay zero, with finite gradients."""
    sq = jnp.sum(x * x, axis=axis, keepdims=True)
    return x / jnp.sqrt(jnp.maximum(sq, eps * eps))


def _huber(x: Array, delta: float = 1.0) -> Array:
    """Huber / smooth-L1: x^2 / 2 for |x| < delta, delta (|x| - delta / 2) beyond."""
    ax = jnp.abs(x)
    return jnp.where(ax < delta, 0.5 * x * x, delta * (ax - 0.5 * delta))


def similarity_distillation(teacher_emb: Array, student_emb: Array, mask: Array | None = None) -> Array:
    """Similarity-preserving distillation (Tung & Mori, "Similarity-Preserving Knowledge
    Distillation", ICCV 2019), batch-level (a scalar).

    Distils which frames the teacher finds alike: with F [N, D] the batch's real frames, G = F F^T
    [N, N] with each row L2-normalised, for teacher and student alike, and the loss
    ||G_t - G_s||_F^2 / N^2 (eq. 3-4 of the paper, with frames in place of images). Padded frames are
    out of both rows and columns and N counts real frames only. Memory O(N^2).

    Args:
      teacher_emb: [B, T, D_t], the teacher's embeddings.
      student_emb: [B, T, D_s], the student's.
      mask: [B, T], 1 for real frames.
    """
    t, s, w = _flat_frames(teacher_emb, student_emb, mask)
    g_t, g_s = _unit(t @ t.T), _unit(s @ s.T)  # padded rows and columns are 0
    n = jnp.maximum(jnp.sum(w), 1.0)
    diff = g_t - g_s
    return jnp.sum(diff * diff) / (n * n)


def similarity_term() -> TermFn:
    """The "similarity" term of `compose`: `similarity_distillation`, a scalar."""

    return embedding_term(similarity_distillation)


def _distances(x: Array, eps: float = NORM_EPS) -> Array:
    """Pairwise Euclidean distances [N, N]; sqrt guarded (double where) so that 0 has a zero gradient."""
    diff = x[:, None, :] - x[None, :, :]
    sq = jnp.sum(diff * diff, axis=-1)
    positive = sq > eps * eps
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _angles(x: Array) -> Array:
    """cos of the angle at frame j between frames i and k, [j, i, k]: <unit(x_i - x_j), unit(x_k - x_j)>."""
    edges = _unit(x[None, :, :] - x[:, None, :])  # [j, i, D]: from j to i
    return jnp.einsum("jid,jkd->jik", edges, edges)


def rkd_distillation(
    teacher_emb: Array,
    student_emb: Array,
    mask: Array | None = None,
    *,
    distance_weight: float = RKD_DISTANCE_WEIGHT,
    angle_weight: float = RKD_ANGLE_WEIGHT,
) -> Array:
    """Relational knowledge distillation (Park et al., "Relational Knowledge Distillation", CVPR 2019),
    batch-level (a scalar).

    Distils the geometry of the batch's real frames: distance_weight * L_D + angle_weight * L_A, with
    weights 1 and 2 as in the paper (lambda_D = 1, lambda_A = 2).
      * L_D, distance-wise: the Euclidean distance of every pair of distinct real frames, divided by
        its mean over those pairs (for teacher and student separately), compared by Huber (smooth L1,
        delta 1) and averaged over the pairs;
      * L_A, angle-wise: for every triplet of distinct real frames (i, j, k), the cosine of the angle
        at j between i and k, compared by Huber and averaged over the triplets.
    Teacher and student widths may differ; the teacher gets no gradient.

    Cost: all pairs and all triplets of the batch's N = B * T frames: memory O(N^2 D) for the unit
    edge vectors and O(N^3) for the angles (N = 64 frames: 262k angles; N = 1024: 1e9, i.e. 4 GB per
    network in float32), so keep B * T small; `angle_weight=0` skips the angle term, leaving O(N^2 D).

    Args:
      teacher_emb: [B, T, D_t], the teacher's embeddings.
      student_emb: [B, T, D_s], the student's.
      mask: [B, T], 1 for real frames.
      distance_weight: lambda_D, the weight of L_D.
      angle_weight: lambda_A, the weight of L_A.
    """
    t, s, w = _flat_frames(teacher_emb, student_emb, mask)
    valid = w > 0
    distinct = ~jnp.eye(w.shape[0], dtype=bool)
    pairs = (valid[:, None] & valid[None, :] & distinct).astype(jnp.float32)
    n_pairs = jnp.maximum(jnp.sum(pairs), 1.0)

    def normalised(x: Array) -> Array:
        d = _distances(x)
        mean = jnp.sum(d * pairs) / n_pairs
        return d / jnp.maximum(mean, NORM_EPS)

    l_distance = jnp.sum(_huber(normalised(s) - normalised(t)) * pairs) / n_pairs
    if not angle_weight:
        return distance_weight * l_distance
    triplets = pairs[:, :, None] * pairs[:, None, :] * distinct[None, :, :]  # [j, i, k], all distinct
    l_angle = jnp.sum(_huber(_angles(s) - _angles(t)) * triplets) / jnp.maximum(jnp.sum(triplets), 1.0)
    return distance_weight * l_distance + angle_weight * l_angle


def rkd_term(distance_weight: float = RKD_DISTANCE_WEIGHT, angle_weight: float = RKD_ANGLE_WEIGHT) -> TermFn:
    """The "rkd" term of `compose`: `rkd_distillation`, a scalar."""

    return embedding_term(rkd_distillation, distance_weight=distance_weight, angle_weight=angle_weight)
