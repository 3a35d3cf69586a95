"""PKDOT: privileged knowledge distillation with optimal transport between similarity structures.

After PKDOT (Aslam et al., privileged knowledge distillation with optimal transport; the authors'
code: github.com/haseebaslam95/PKDOT). The Sinkhorn divergence comes from `ott-jax` (`import ott`),
imported on first use so that `pkd_jax.losses` itself loads without it.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp

from pkd_jax.losses.ccc import Array, TermFn, _expand_mask
from pkd_jax.losses.distill import embedding_term

PKDOT_K = 30  # columns kept per row, the authors' topk
PKDOT_BLUR = 0.1  # geomloss' blur; epsilon = blur ** 2 for p = 2
NORM_EPS = 1e-8


def _unit_rows(x: Array, eps: float = NORM_EPS) -> Array:
    """Rows scaled to unit L2 norm; a zero row stays zero, with finite gradients."""
    sq = jnp.sum(x * x, axis=-1, keepdims=True)
    return x / jnp.sqrt(jnp.maximum(sq, eps * eps))


def _ott_sinkhorn_divergence():
    """`ott.tools.sinkhorn_divergence.sinkhorn_divergence`, `PointCloud` and `SqEuclidean`, lazily."""
    with warnings.catch_warnings():  # ott imports jaxopt, which warns that it is unmaintained
        warnings.filterwarnings(
            "ignore", message="JAXopt is no longer maintained", category=DeprecationWarning
        )
        try:
            from ott.geometry import costs, pointcloud
            from ott.tools import sinkhorn_divergence
        except ImportError as error:
            raise ImportError(
                "the 'pkdot' distillation term needs ott-jax (pip install ott-jax), a dependency of pkd_jax"
            ) from error
    return sinkhorn_divergence.sinkhorn_divergence, pointcloud.PointCloud, costs.SqEuclidean


def sinkhorn_divergence(
    x: Array,
    y: Array,
    a: Array,
    b: Array,
    *,
    blur: float = PKDOT_BLUR,
    threshold: float = 1e-5,
    max_iterations: int = 2000,
) -> Array:
    """Debiased entropic Sinkhorn divergence between weighted point clouds, in geomloss' convention.

    S(a, b) = OT(a, b) - OT(a, a) / 2 - OT(b, b) / 2, where OT(a, b) = min_P <P, C> + eps KL(P | a x b)
    over couplings P of the marginals a and b (ott's `reg_ot_cost`, which equals the dual objective
    <a, f> + <b, g> at convergence, as in geomloss), with geomloss' cost for p = 2, C(x, y) =
    |x - y|^2 / 2, and eps = blur^2. ott's `SqEuclidean` cost is |x - y|^2 without the 1/2, so this is
    half of ott's divergence with that cost and eps = 2 blur^2 (scaling cost and eps together scales OT).
    A value matches `geomloss.SamplesLoss("sinkhorn", p=2, blur=blur)` up to geomloss' stopping rule.

    Args:
      x: [N, k] points.
      y: [M, k] points.
      a: [N] weights of `x`.
      b: [M] weights of `y`. Both weights must sum to the same total (1); a point of weight 0 takes
        no part.
      blur: geomloss' blur; eps = blur^2.
      threshold: ott's Sinkhorn stopping rule: the marginal error.
      max_iterations: ott's Sinkhorn stopping rule: the iteration cap.

    Returns:
      The divergence, a scalar. Gradients flow to `x` and `y` (Danskin's theorem, ott's default).
    """
    divergence, point_cloud, sq_euclidean = _ott_sinkhorn_divergence()
    value, _ = divergence(
        point_cloud,
        x=jnp.asarray(x, jnp.float32),
        y=jnp.asarray(y, jnp.float32),
        cost_fn=sq_euclidean(),
        epsilon=2.0 * blur**2,
        a=a,
        b=b,
        solve_kwargs={"threshold": threshold, "max_iterations": max_iterations},
    )
    return 0.5 * value


def pkdot_distillation(
    teacher_emb: Array,
    student_emb: Array,
    mask: Array | None = None,
    *,
    k: int = PKDOT_K,
    blur: float = PKDOT_BLUR,
    threshold: float = 1e-5,
    max_iterations: int = 2000,
) -> Array:
    """PKDOT's optimal-transport distillation of the batch's similarity structure, batch-level (scalar).

    After PKDOT (Aslam et al., privileged knowledge distillation with optimal transport; the authors'
    code github.com/haseebaslam95/PKDOT). What is distilled is the teacher's *relational* structure, not
    its embeddings: over the batch's N real frames (B * T flattened, padding given zero weight, so
    shapes stay static under jit),
      1. teacher and student cosine-similarity matrices S_t, S_s [N, N] (embedding widths may differ);
      2. each shifted by its minimum over real frames so that it is non-negative;
      3. per row, the k columns where the *teacher* is least similar, k = min(k, N) (indices from the
         teacher, applied to both; padded columns are never picked before real ones and count as 0);
      4. the rows of the two reduced matrices are two point clouds of N points in R^k, uniform weights
         over real frames, compared by the debiased entropic Sinkhorn divergence with p = 2 and blur
         0.1 (`sinkhorn_divergence`: geomloss' convention, cost |x - y|^2 / 2 and eps = blur^2 = 0.01).
    The teacher side is under `jax.lax.stop_gradient`; zero or constant embeddings give finite gradients.

    Cost: O(N^2) memory for the similarity matrices and O(N^2) work per Sinkhorn iteration (three
    problems, up to `max_iterations` iterations each).

    The authors add 0.6 x this divergence to the task loss; with `compose` the weight is the gate's
    (alpha for the "none" and "paper" gates), so 0.6 is a configuration choice (`alpha=0.6`). As a
    batch-level term, a per-sequence gate scales it by its mean weight over the valid sequences.

    Args:
      teacher_emb: [B, T, D_t], the teacher's embeddings.
      student_emb: [B, T, D_s], the student's.
      mask: [B, T], 1 for real frames.
      k: columns kept per row (the authors' topk = 30).
      blur: geomloss' blur (0.1 in the authors' code).
      threshold: Sinkhorn's stopping rule: the marginal error.
      max_iterations: Sinkhorn's stopping rule: the iteration cap.
    """
    teacher = jax.lax.stop_gradient(jnp.asarray(teacher_emb, jnp.float32))
    student = jnp.asarray(student_emb, jnp.float32)
    w = _expand_mask(mask, student[..., 0]).reshape(-1)  # [N]
    valid = w > 0
    t = jnp.where(valid[:, None], teacher.reshape(w.shape[0], -1), 0.0)
    s = jnp.where(valid[:, None], student.reshape(w.shape[0], -1), 0.0)
    pair = valid[:, None] & valid[None, :]

    def similarity(x: Array) -> Array:
        u = _unit_rows(x)
        sim = u @ u.T
        low = jnp.min(jnp.where(pair, sim, jnp.inf))
        low = jnp.where(jnp.any(pair), low, 0.0)
        return sim - low  # non-negative over real frames

    sim_t, sim_s = similarity(t), similarity(s)
    kept = min(int(k), w.shape[0])
    # the teacher's least similar columns; padded columns rank last and are zeroed in both
    order = jnp.where(valid[None, :], sim_t, jnp.inf)
    _, columns = jax.lax.top_k(-order, kept)  # [N, kept]
    real = jnp.take_along_axis(jnp.broadcast_to(valid[None, :], sim_t.shape), columns, axis=1)
    real = real & valid[:, None]  # padded rows: zero points of zero weight
    x = jnp.where(real, jnp.take_along_axis(sim_t, columns, axis=1), 0.0)  # teacher points [N, kept]
    y = jnp.where(real, jnp.take_along_axis(sim_s, columns, axis=1), 0.0)  # student points
    total = jnp.sum(w)
    # uniform over real frames; a batch without any keeps finite (unused) weights
    weights = jnp.where(total > 0, w / jnp.maximum(total, 1.0), 1.0 / w.shape[0])
    value = sinkhorn_divergence(
        y, x, weights, weights, blur=blur, threshold=threshold, max_iterations=max_iterations
    )
    return jnp.where(total > 0, value, 0.0)


def pkdot_term(
    k: int = PKDOT_K, blur: float = PKDOT_BLUR, threshold: float = 1e-5, max_iterations: int = 2000
) -> TermFn:
    """The "pkdot" term of `compose`: `pkdot_distillation` over the batch's real frames, a scalar."""

    return embedding_term(
        pkdot_distillation, k=k, blur=blur, threshold=threshold, max_iterations=max_iterations
    )
