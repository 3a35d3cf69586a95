"""The distillation terms of `pkd_jax.losses` against float64 NumPy references, with padded frames."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pkd_jax import losses

MASK = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], np.float32)  # 7 real frames, 3 padded
REAL = MASK.reshape(-1) > 0


def crafted(d_teacher: int = 4, d_student: int = 4, k: int = 2, seed: int = 0, garbage: float = 50.0):
    """Teacher and student embeddings [2, 5, D] and predictions [2, 5, K], padded frames filled with
    large values (`garbage` sets them)."""
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(2, 5, d_teacher))
    s = 0.6 * t[..., :d_student] + 0.5 * rng.normal(size=(2, 5, d_student)) + 0.2
    tp = rng.normal(size=(2, 5, k))
    sp = 0.5 * tp + 0.4 * rng.normal(size=(2, 5, k)) + 0.1
    pad = MASK == 0
    fill = np.random.default_rng(seed + 100)
    for x in (t, s, tp, sp):
        x[pad] = garbage * fill.normal(size=x[pad].shape)
    return t, s, tp, sp


def as32(*xs):
    return [jnp.asarray(x, jnp.float32) for x in xs]


def per_sequence64(fn, *arrays):
    """fn over each sequence's real frames, float64, [B]."""
    return np.array([fn(*(a[b][MASK[b] > 0] for a in arrays)) for b in range(MASK.shape[0])])


def ccc64(x, y):
    mx, my = x.mean(), y.mean()
    cov = np.mean((x - mx) * (y - my))
    return 2 * cov / (x.var() + y.var() + (mx - my) ** 2 + losses.CCC_EPS)


def huber64(x):
    return np.where(np.abs(x) < 1.0, 0.5 * x * x, np.abs(x) - 0.5)


def similarity64(t, s):
    def gram(f):
        g = f @ f.T
        return g / np.linalg.norm(g, axis=1, keepdims=True)

    n = len(t)
    return np.sum((gram(t) - gram(s)) ** 2) / n**2


def rkd64(t, s):
    n = len(t)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    triplets = [(i, j, k) for i in range(n) for j in range(n) for k in range(n) if len({i, j, k}) == 3]

    def distances(x):
        d = np.array([np.linalg.norm(x[i] - x[j]) for i, j in pairs])
        return d / d.mean()

    def angles(x):
        unit = lambda v: v / np.linalg.norm(v)
        return np.array([unit(x[i] - x[j]) @ unit(x[k] - x[j]) for i, j, k in triplets])

    l_d = huber64(distances(s) - distances(t)).mean()
    l_a = huber64(angles(s) - angles(t)).mean()
    return 1.0 * l_d + 2.0 * l_a


def ot64(x, y, a, b, eps, iters=4000):
    """Entropic OT in the log domain: min <P, C> + eps KL(P | a x b), C = |x - y|^2 / 2; <a, f> + <b, g>."""
    cost = 0.5 * np.sum((x[:, None] - y[None]) ** 2, axis=-1)
    f, g = np.zeros(len(a)), np.zeros(len(b))

    def softmin(m, axis):
        top = m.max(axis=axis, keepdims=True)
        return (top + np.log(np.exp(m - top).sum(axis=axis, keepdims=True))).squeeze(axis)

    for _ in range(iters):
        f = -eps * softmin((g[None] - cost) / eps + np.log(b)[None], 1)
        g = -eps * softmin((f[:, None] - cost) / eps + np.log(a)[:, None], 0)
    return a @ f + b @ g


def sinkhorn_divergence64(x, y, a, b, eps):
    return ot64(x, y, a, b, eps) - 0.5 * ot64(x, x, a, a, eps) - 0.5 * ot64(y, y, b, b, eps)


def pkdot64(t, s, k, blur):
    def shifted(f):
        u = f / np.linalg.norm(f, axis=1, keepdims=True)
        sim = u @ u.T
        return sim - sim.min()

    sim_t, sim_s = shifted(t), shifted(s)
    k = min(k, len(t))
    cols = np.argsort(sim_t, axis=1)[:, :k]  # the teacher's least similar columns
    rows = np.arange(len(t))[:, None]
    w = np.full(len(t), 1.0 / len(t))
    return sinkhorn_divergence64(sim_s[rows, cols], sim_t[rows, cols], w, w, blur**2)


def flat_real(x):
    return x.reshape(-1, x.shape[-1])[REAL]


# ---------------------------------------------------------------------------------------------------
# Values against the references; padding never changes them.


def test_mse_per_sequence_over_real_frames_and_width_check():
    t, s, _, _ = crafted()
    got = np.asarray(losses.mse_distillation(*as32(t, s), MASK))
    want = per_sequence64(lambda a, b: np.mean((b - a) ** 2), t, s)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    t2, s2, _, _ = crafted(garbage=-900.0, seed=0)
    np.testing.assert_allclose(np.asarray(losses.mse_distillation(*as32(t2, s2), MASK)), got, rtol=1e-6)
    with pytest.raises(ValueError, match=r"teacher's is 4, the student's 3.*embed_features"):
        losses.mse_distillation(*as32(*crafted(4, 3)[:2]), MASK)


@pytest.mark.parametrize("metric", ["ccc", "mse"])
def test_response_per_sequence(metric):
    _, _, tp, sp = crafted()
    got = np.asarray(losses.response_distillation(*as32(tp, sp), MASK, metric=metric))
    if metric == "ccc":
        one = lambda a, b: np.mean([1.0 - ccc64(b[:, j], a[:, j]) for j in range(a.shape[1])])
    else:
        one = lambda a, b: np.mean((b - a) ** 2)
    np.testing.assert_allclose(got, per_sequence64(one, tp, sp), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="response metric"):
        losses.response_term("mae")


@pytest.mark.parametrize("d_student", [4, 3])
def test_similarity_preserving_over_the_batch_real_frames(d_student):
    t, s, _, _ = crafted(4, d_student)
    got = float(losses.similarity_distillation(*as32(t, s), MASK))
    assert got == pytest.approx(similarity64(flat_real(t), flat_real(s)), rel=1e-4)
    t2, s2, _, _ = crafted(4, d_student, garbage=7.0)
    assert float(losses.similarity_distillation(*as32(t2, s2), MASK)) == pytest.approx(got, rel=1e-6)


@pytest.mark.parametrize("d_student", [4, 3])
def test_relational_distances_and_angles(d_student):
    t, s, _, _ = crafted(4, d_student)
    got = float(losses.rkd_distillation(*as32(t, s), MASK))
    assert got == pytest.approx(rkd64(flat_real(t), flat_real(s)), rel=1e-4)
    t2, s2, _, _ = crafted(4, d_student, garbage=-3.0)
    assert float(losses.rkd_distillation(*as32(t2, s2), MASK)) == pytest.approx(got, rel=1e-6)
    scaled = float(losses.rkd_distillation(*as32(t, 10.0 * s), MASK))  # distances are normalised
    assert scaled == pytest.approx(got, rel=1e-4)


def test_sinkhorn_divergence_matches_a_log_domain_sinkhorn_with_zero_weight_points():
    rng = np.random.default_rng(3)
    x, y = 0.4 * rng.normal(size=(6, 3)), 0.4 * rng.normal(size=(6, 3)) + 0.15
    a = np.array([1, 1, 1, 1, 0, 0], float) / 4  # the last two points take no part
    b = np.array([1, 1, 0, 1, 1, 1], float) / 5
    want = sinkhorn_divergence64(x[a > 0], y[b > 0], a[a > 0], b[b > 0], 0.01)
    got = float(losses.sinkhorn_divergence(*as32(x, y, a, b)))
    assert got == pytest.approx(want, rel=1e-3)


@pytest.mark.parametrize("k", [3, 30])
def test_pkdot_matches_the_reference(k):
    t, s, _, _ = crafted(4, 3)
    got = float(losses.pkdot_distillation(*as32(t, s), MASK, k=k))
    assert got == pytest.approx(pkdot64(flat_real(t), flat_real(s), k, 0.1), rel=1e-3)
    t2, s2, _, _ = crafted(4, 3, garbage=-20.0)
    assert float(losses.pkdot_distillation(*as32(t2, s2), MASK, k=k)) == pytest.approx(got, rel=1e-4)


# ---------------------------------------------------------------------------------------------------
# Gradients: finite for degenerate students, none for the teacher.

EMBEDDING_TERMS = {
    "mse": losses.mse_distillation,
    "similarity": losses.similarity_distillation,
    "rkd": losses.rkd_distillation,
    "pkdot": losses.pkdot_distillation,
}


@pytest.mark.parametrize("name", sorted(EMBEDDING_TERMS))
def test_embedding_term_gradients(name):
    term = EMBEDDING_TERMS[name]
    t, s = as32(*crafted()[:2])
    loss = lambda teacher, student: jnp.sum(term(teacher, student, MASK))
    for student in (jnp.zeros_like(s), jnp.full_like(s, 0.7)):
        grad = jax.grad(loss, argnums=1)(t, student)
        assert np.all(np.isfinite(np.asarray(grad))), name
    g_teacher, g_student = jax.grad(loss, argnums=(0, 1))(t, s)
    assert np.all(np.asarray(g_teacher) == 0.0)
    assert np.all(np.isfinite(np.asarray(g_student))) and np.any(np.asarray(g_student) != 0.0)
    assert np.all(np.asarray(g_student)[MASK == 0] == 0.0)  # padding gets no gradient


@pytest.mark.parametrize("metric", ["ccc", "mse"])
def test_response_gradients(metric):
    _, _, tp, sp = as32(*crafted())
    loss = lambda teacher, student: jnp.sum(
        losses.response_distillation(teacher, student, MASK, metric=metric)
    )
    for student in (jnp.zeros_like(sp), jnp.full_like(sp, 0.3)):
        assert np.all(np.isfinite(np.asarray(jax.grad(loss, argnums=1)(tp, student))))
    g_teacher, g_student = jax.grad(loss, argnums=(0, 1))(tp, sp)
    assert np.all(np.asarray(g_teacher) == 0.0) and np.any(np.asarray(g_student) != 0.0)


# ---------------------------------------------------------------------------------------------------
# compose: every term by name, with every gate.


def batch_and_outputs():
    t, s, tp, sp = crafted()
    labels = np.where(MASK[..., None] > 0, 0.8 * tp, 0.0)
    outputs = dict(zip(("teacher_emb", "emb", "teacher_pred", "pred"), as32(t, s, tp, sp), strict=True))
    return outputs, {"labels": jnp.asarray(labels, jnp.float32), "frame_mask": jnp.asarray(MASK)}


METRICS = {
    "loss",
    "ccc_loss",
    "distill_loss",
    "distilled_fraction",
    "teacher_gamma",
    "ccc_weight",
    "distill_weight",
    "gamma_q10",
    "gamma_q50",
    "gamma_q90",
}


@pytest.mark.parametrize("name", sorted(losses.DISTILL_TERMS))
def test_compose_runs_every_term_with_every_gate(name):
    outputs, batch = batch_and_outputs()
    for gate in ("none", "paper", "released_code"):
        loss, metrics = losses.compose(distill=name, gate=gate, theta=1.5, gate_context="clip")(
            outputs, batch
        )
        assert set(metrics) == METRICS, (name, gate)
        assert all(np.isfinite(float(v)) for v in metrics.values()), (name, gate)
        assert np.isfinite(float(loss))


def test_registry_levels_broadcasting_and_options():
    assert {name: level for name, (_, level) in losses.DISTILL_TERMS.items()} == {
        "per_frame": "sequence",
        "flattened_cosine": "batch",
        "mse": "sequence",
        "similarity": "batch",
        "rkd": "batch",
        "pkdot": "batch",
        "response": "sequence",
        "response_mse": "sequence",
    }
    outputs, batch = batch_and_outputs()
    gate = losses.make_gate("paper", alpha=0.2, theta=1.0)
    weights = gate(outputs["teacher_pred"], batch["labels"], batch["frame_mask"])
    l_ccc = np.asarray(losses.ccc_loss(outputs["pred"], batch["labels"], MASK))
    l_sim = float(losses.similarity_distillation(outputs["teacher_emb"], outputs["emb"], MASK))
    want = np.mean(np.asarray(weights.ccc) * l_ccc) + np.mean(np.asarray(weights.distill)) * l_sim
    loss, _ = losses.compose(distill="similarity", gate="paper", theta=1.0)(outputs, batch)
    assert float(loss) == pytest.approx(want, rel=1e-5)  # a batch-level term gets the mean gate weight
    by_option = losses.compose(distill="response", distill_options={"metric": "mse"})(outputs, batch)[0]
    by_name = losses.compose(distill="response_mse")(outputs, batch)[0]
    assert float(by_option) == pytest.approx(float(by_name), rel=1e-6)
    with pytest.raises(ValueError, match=r"'mse', 'per_frame', 'pkdot'"):
        losses.compose(distill="fitnets")
    with pytest.raises(ValueError, match="takes no option"):
        losses.compose(distill="pkdot", distill_options={"topk": 3})
    with pytest.raises(ValueError, match="named distillation term"):
        losses.compose(distill=losses.mse_term(), distill_options={"k": 3})
