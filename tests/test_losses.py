"""Losses: CCC against a float64 reference, masks, gradients, cosine distillation, gates, compose."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pkd_jax import losses


def ccc64(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    mx, my = x.mean(), y.mean()
    cov = np.mean((x - mx) * (y - my))
    return 2 * cov / (x.var() + y.var() + (mx - my) ** 2)


def correlated(rng, shape, noise=0.5, bias=0.1):
    y = rng.uniform(-1, 1, shape).astype(np.float32)
    x = (0.7 * y + noise * rng.normal(size=shape) + bias).astype(np.float32)
    return x, y


def test_ccc_matches_float64_reference_flattened_and_per_sequence():
    rng = np.random.default_rng(0)
    x, y = correlated(rng, (4, 50, 2))
    flat = np.asarray(losses.ccc(x, y, axis=(0, 1)))
    for k in range(2):
        assert abs(flat[k] - ccc64(x[..., k], y[..., k])) < 1e-6
    per_seq = np.asarray(losses.ccc(x, y, axis=1))
    assert per_seq.shape == (4, 2)
    for b in range(4):
        for k in range(2):
            assert abs(per_seq[b, k] - ccc64(x[b, :, k], y[b, :, k])) < 1e-6
    assert abs(float(losses.ccc(x, y)) - ccc64(x, y)) < 1e-6


def test_ccc_identity_and_negation():
    x = np.random.default_rng(1).normal(size=(3, 40, 1)).astype(np.float32)
    x -= x.mean()  # CCC(x, -x) = -1 needs zero mean: otherwise the means differ too
    assert abs(float(losses.ccc(x, x)) - 1.0) < 1e-6
    assert abs(float(losses.ccc(x, -x)) + 1.0) < 1e-6


def test_mask_ignores_masked_frames_even_nan():
    rng = np.random.default_rng(2)
    x, y = correlated(rng, (2, 30, 2))
    mask = np.ones((2, 30), np.float32)
    mask[0, 20:] = 0
    mask[1, :5] = 0
    garbage_x, garbage_y = x.copy(), y.copy()
    garbage_x[mask == 0] = np.nan
    garbage_y[mask == 0] = 1e6
    got = np.asarray(losses.ccc(garbage_x, garbage_y, mask, axis=1))
    for b in range(2):
        keep = mask[b] > 0
        for k in range(2):
            assert abs(got[b, k] - ccc64(x[b, keep, k], y[b, keep, k])) < 1e-6
    grad = jax.grad(lambda p: losses.ccc_loss(p, garbage_y, mask))(jnp.asarray(garbage_x))
    assert np.all(np.isfinite(grad))
    assert np.all(np.asarray(grad)[mask == 0] == 0)


def test_constant_inputs_are_finite_with_finite_gradients():
    y = np.random.default_rng(3).normal(size=(2, 25, 2)).astype(np.float32)
    const = jnp.full((2, 25, 2), 0.3)
    for target in (y, np.full_like(y, 0.3), np.zeros_like(y)):
        for per_sequence in (False, True):
            f = lambda p, t=target, s=per_sequence: jnp.sum(losses.ccc_loss(p, t, per_sequence=s))
            value, grad = jax.value_and_grad(f)(const)
            assert np.isfinite(float(value))
            assert np.all(np.isfinite(np.asarray(grad)))
    assert float(losses.ccc(const, y)) == pytest.approx(0.0, abs=1e-7)


def test_ccc_loss_per_sequence_skips_empty_sequences():
    rng = np.random.default_rng(4)
    x, y = correlated(rng, (3, 20, 1))
    mask = np.ones((3, 20), np.float32)
    mask[1] = 0
    values = np.asarray(losses.ccc_loss(x, y, mask, per_sequence=True))
    assert values[1] == 0.0
    assert values[0] == pytest.approx(1 - ccc64(x[0], y[0]), abs=1e-6)


def test_one_ccc_for_the_loss_the_metrics_and_the_gate():
    """The loss's CCC (float32), the metrics' and the gate's gamma (float64) agree on every sequence,
    masked frames, a constant prediction and a sequence with no frame included."""
    from pkd_jax import metrics
    from pkd_jax.precompute import gate_track

    rng = np.random.default_rng(11)
    t, k = 40, 2
    x, y = correlated(rng, (4, t, k))
    x[1, :, 0] = 0.25  # a constant prediction against varying labels: CCC 0 up to rounding
    mask = (rng.random((4, t)) > 0.3).astype(np.float32)
    mask[2] = 0  # no frame: CCC 0 by convention
    x[mask == 0] = np.nan  # masked frames may hold anything
    loss_ccc = np.asarray(losses.ccc(x, y, mask, axis=1))
    loss_gamma = np.asarray(losses.ccc_loss(x, y, mask, per_sequence=True))
    for b in range(4):
        ccc_np = [metrics.ccc_np(x[b, :, j], y[b, :, j], mask[b]) for j in range(k)]
        streamed = metrics.StreamingCCC(k)
        streamed.update(x[b], y[b], mask[b])
        np.testing.assert_allclose(streamed.result(), ccc_np, rtol=0, atol=1e-12)
        np.testing.assert_allclose(loss_ccc[b], ccc_np, rtol=0, atol=1e-6)
        # The gate's windowed gamma over the whole sequence, and its clip gamma of the sequence as one
        # clip: the loss's eps, in float64 (the metrics' eps is 0: they differ by ~1e-8 relative).
        window = gate_track.windowed_gamma(x[b], y[b], mask[b], np.array([0]), np.array([t]))
        clip = gate_track.clip_gamma(x[b][None], y[b], mask[b])
        assert window[0] == pytest.approx(1.0 - np.mean(ccc_np), abs=1e-7)
        assert clip[0] == pytest.approx(0.0 if b == 2 else window[0], abs=1e-10)
        assert clip[0] == pytest.approx(loss_gamma[b], abs=1e-6)  # no frame: gamma 0 in both
    assert np.all(loss_ccc[2] == 0.0) and abs(loss_ccc[1, 0]) < 1e-6


def test_the_ccc_kernel_convention_in_numpy_and_jax():
    """Non-degenerate: the plain formula bit for bit; no frame or equal constants: 0; NaN propagates."""
    from pkd_jax.ccc_kernel import DEGENERATE_REL, ccc_from_moments, masked_moments

    rng = np.random.default_rng(12)
    mx, my, cov = rng.normal(size=(3, 50))
    vx, vy = rng.uniform(0.01, 2.0, size=(2, 50))
    for xp, dtype in ((np, np.float64), (jnp, np.float32)):
        moments = [xp.asarray(m.astype(dtype)) for m in (mx, my, vx, vy, cov)]
        a, b, va, vb, c = moments
        for eps in (0.0, 1e-8):
            got = np.asarray(ccc_from_moments(*moments, eps=eps, xp=xp))
            assert got.dtype == dtype
            assert np.array_equal(got, np.asarray(2.0 * c / (va + vb + (a - b) ** 2 + eps)))
            zero = xp.zeros(3, dtype)  # the moments of no frame
            assert np.array_equal(ccc_from_moments(zero, zero, zero, zero, zero, eps=eps, xp=xp), [0, 0, 0])
            nan = xp.full(1, np.nan, dtype)
            assert np.isnan(ccc_from_moments(nan, zero[:1], zero[:1], zero[:1], zero[:1], eps=eps, xp=xp)[0])
        # Equal constants, their mean exact: zero spread, so 0 with and without eps.
        const = xp.full((1, 8, 1), 0.5, dtype)
        m = masked_moments(const, const, xp.ones((1, 8, 1), dtype), axis=1, xp=xp)
        assert [float(ccc_from_moments(*m, eps=e, xp=xp)[0, 0, 0]) for e in (0.0, 1e-8)] == [0.0, 0.0]
        # A spread at the rounding threshold is degenerate, one just above it is not.
        one = xp.ones(2, dtype)
        spread = xp.asarray([DEGENERATE_REL * 2.0, DEGENERATE_REL * 4.0], dtype)
        got = np.asarray(ccc_from_moments(one, one, spread, 0 * spread, spread / 2, eps=0.0, xp=xp))
        assert got[0] == 0.0 and got[1] == pytest.approx(1.0)
    # The loss's gradient where the convention applies: zero, not 0/0.
    grad = jax.grad(lambda p: losses.ccc_loss(p, jnp.full((2, 8, 1), 0.5)))(jnp.full((2, 8, 1), 0.5))
    assert np.array_equal(np.asarray(grad), np.zeros((2, 8, 1)))


def cos64(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_cosine_distillation_variants_match_numpy():
    rng = np.random.default_rng(5)
    t = rng.normal(size=(3, 6, 8)).astype(np.float32)
    s = (t + rng.normal(size=t.shape)).astype(np.float32)
    per_frame = np.mean([[1 - cos64(t[b, i], s[b, i]) for i in range(6)] for b in range(3)])
    assert float(losses.cosine_distillation(t, s)) == pytest.approx(per_frame, abs=1e-6)
    flat = 1 - cos64(t, s)
    assert float(losses.cosine_distillation(t, s, variant="flattened")) == pytest.approx(flat, abs=1e-6)
    per_seq = np.asarray(losses.cosine_distillation(t, s, per_sequence=True))
    assert per_seq.shape == (3,)
    assert per_seq[2] == pytest.approx(np.mean([1 - cos64(t[2, i], s[2, i]) for i in range(6)]), abs=1e-6)
    mask = np.ones((3, 6), np.float32)
    mask[:, 4:] = 0
    masked = float(losses.cosine_distillation(t, s, mask))
    assert masked == pytest.approx(
        np.mean([[1 - cos64(t[b, i], s[b, i]) for i in range(4)] for b in range(3)]), abs=1e-6
    )
    with pytest.raises(ValueError, match="variant"):
        losses.cosine_distillation(t, s, variant="cosine")


def test_teacher_never_receives_gradients_and_zero_vectors_are_finite():
    rng = np.random.default_rng(6)
    t = jnp.asarray(rng.normal(size=(2, 4, 8)), jnp.float32)
    s = jnp.asarray(rng.normal(size=(2, 4, 8)), jnp.float32)
    for variant in ("per_frame", "flattened"):
        gt, gs = jax.grad(lambda a, b, v=variant: losses.cosine_distillation(a, b, variant=v), (0, 1))(t, s)
        assert np.all(np.asarray(gt) == 0)
        assert np.any(np.asarray(gs) != 0)
        grad = jax.grad(lambda b, v=variant: losses.cosine_distillation(t, b, variant=v))(jnp.zeros_like(s))
        assert np.all(np.isfinite(np.asarray(grad)))


def crafted_teacher():
    """Sequence 0: the teacher is right (gamma ~ 0); sequence 1: it is anti-correlated (gamma ~ 2)."""
    y = np.random.default_rng(7).uniform(-1, 1, (2, 40, 1)).astype(np.float32)
    y -= y.mean(axis=1, keepdims=True)  # zero-mean sequences, so CCC(-y, y) is exactly -1
    teacher = y.copy()
    teacher[1] = -y[1]
    return teacher, y


def test_paper_gate_both_branches():
    teacher, y = crafted_teacher()
    w = losses.gate_paper(teacher, y, None, alpha=0.2, theta=0.3)
    np.testing.assert_allclose(np.asarray(w.gamma), [0.0, 2.0], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(w.distilled), [1.0, 0.0])
    np.testing.assert_allclose(np.asarray(w.distill), [0.2, 0.0])
    np.testing.assert_allclose(np.asarray(w.ccc), [float(w.gamma[0]), 1.0], atol=1e-6)


def test_none_gate_is_eq4():
    teacher, y = crafted_teacher()
    w = losses.gate_none(teacher, y, None, alpha=0.2)
    assert (float(w.ccc), float(w.distill), float(w.distilled)) == pytest.approx((0.8, 0.2, 1.0))


@pytest.mark.parametrize(("which", "first_branch"), [("good", True), ("mediocre", False), ("anti", True)])
def test_released_code_gate_branches(which, first_branch):
    rng = np.random.default_rng(8)
    y = rng.uniform(-1, 1, (2, 40, 1)).astype(np.float32)
    teacher = {
        "good": y,
        "mediocre": (0.5 * y + 0.5 * rng.normal(size=y.shape)).astype(np.float32),
        "anti": -y,
    }[which]
    gamma = 1 - ccc64(teacher, y)
    w = losses.gate_released_code(teacher, y, None, theta=0.2)
    assert float(w.gamma) == pytest.approx(gamma, abs=1e-5)
    assert bool(w.distilled) is first_branch
    beta = 0.2 + gamma if first_branch else 1.0
    assert float(w.distill) == pytest.approx(beta, abs=1e-5)
    assert float(w.ccc) == pytest.approx(1 - beta, abs=1e-5)


def make_outputs(seed=9, b=3, t=12, k=2, d=8):
    rng = np.random.default_rng(seed)
    labels = rng.uniform(-1, 1, (b, t, k)).astype(np.float32)
    return (
        {
            "pred": jnp.asarray(labels + rng.normal(size=labels.shape), jnp.float32),
            "emb": jnp.asarray(rng.normal(size=(b, t, d)), jnp.float32),
            "teacher_pred": jnp.asarray(labels + 0.1 * rng.normal(size=labels.shape), jnp.float32),
            "teacher_emb": jnp.asarray(rng.normal(size=(b, t, d)), jnp.float32),
        },
        {"labels": jnp.asarray(labels)},
    )


def test_compose_plain_ccc_and_eq4_by_hand():
    outputs, batch = make_outputs()
    loss, metrics = losses.compose(distill=None)(outputs, batch)
    expected_ccc = float(losses.ccc_loss(outputs["pred"], batch["labels"]))
    assert float(loss) == pytest.approx(expected_ccc, abs=1e-6)
    assert set(metrics) == {"loss", "ccc_loss"}
    loss, metrics = losses.compose(gate="none", alpha=0.3)(outputs, batch)
    cos = float(losses.cosine_distillation(outputs["teacher_emb"], outputs["emb"]))
    assert float(loss) == pytest.approx(0.3 * cos + 0.7 * expected_ccc, abs=1e-5)
    assert float(metrics["distilled_fraction"]) == 1.0


def test_compose_paper_gate_drops_distillation_for_a_wrong_teacher():
    outputs, batch = make_outputs()
    outputs = dict(outputs)
    teacher = np.array(outputs["teacher_pred"])
    teacher[1] = -np.asarray(batch["labels"])[1]  # the teacher is wrong on sequence 1 only
    outputs["teacher_pred"] = jnp.asarray(teacher)
    loss_fn = jax.jit(losses.compose(ccc="per_sequence", gate="paper", alpha=0.2, theta=0.5))
    loss, metrics = loss_fn(outputs, batch)
    assert float(metrics["distilled_fraction"]) == pytest.approx(2 / 3)
    l_ccc = np.asarray(losses.ccc_loss(outputs["pred"], batch["labels"], per_sequence=True))
    l_cos = np.asarray(losses.cosine_distillation(outputs["teacher_emb"], outputs["emb"], per_sequence=True))
    gamma = np.asarray(losses.ccc_loss(outputs["teacher_pred"], batch["labels"], per_sequence=True))
    by_hand = np.mean([0.2 * l_cos[0] + gamma[0] * l_ccc[0], l_ccc[1], 0.2 * l_cos[2] + gamma[2] * l_ccc[2]])
    assert float(loss) == pytest.approx(by_hand, abs=1e-5)


def test_compose_accepts_user_functions_in_place_of_names():
    outputs, batch = make_outputs()

    def always_distill(teacher_pred, labels, mask):
        return losses.GateWeights(jnp.asarray(0.0), jnp.asarray(1.0), jnp.asarray(1.0), jnp.asarray(0.0))

    def mse(outputs, batch):
        return jnp.mean((outputs["pred"] - batch["labels"]) ** 2)

    loss, _ = losses.compose(gate=always_distill)(outputs, batch)
    cos = float(losses.cosine_distillation(outputs["teacher_emb"], outputs["emb"]))
    assert float(loss) == pytest.approx(cos, abs=1e-6)
    loss, _ = losses.compose(ccc=mse, distill=None)(outputs, batch)
    assert float(loss) == pytest.approx(float(mse(outputs, batch)), abs=1e-6)


def test_compose_gradients_reach_only_the_student_and_masks_apply():
    outputs, batch = make_outputs()
    batch = dict(batch, label_mask=jnp.ones((3, 12)).at[2].set(0.0))
    loss_fn = losses.compose(gate="paper", theta=2.5)

    def f(student_pred, student_emb, teacher_pred, teacher_emb):
        out = {
            "pred": student_pred,
            "emb": student_emb,
            "teacher_pred": teacher_pred,
            "teacher_emb": teacher_emb,
        }
        return loss_fn(out, batch)[0]

    grads = jax.grad(f, argnums=(0, 1, 2, 3))(
        outputs["pred"], outputs["emb"], outputs["teacher_pred"], outputs["teacher_emb"]
    )
    assert np.any(np.asarray(grads[0]) != 0) and np.any(np.asarray(grads[1]) != 0)
    assert np.all(np.asarray(grads[2]) == 0) and np.all(np.asarray(grads[3]) == 0)
    assert np.all(np.asarray(grads[0])[2] == 0)  # a sequence without labels has no CCC gradient


def test_unknown_names_are_errors_that_list_the_choices():
    with pytest.raises(ValueError, match="released_code"):
        losses.compose(gate="paper_gate")
    with pytest.raises(ValueError, match="per_sequence"):
        losses.compose(ccc="mean")


@pytest.mark.parametrize(
    ("gate", "context"), [("paper", "clip"), ("released_code", "batch"), ("none", "batch")]
)
def test_a_gates_own_context_reproduces_the_default_exactly(gate, context):
    outputs, batch = make_outputs(b=4)
    default = jax.jit(losses.compose(gate=gate, theta=1.0))(outputs, batch)
    explicit = jax.jit(losses.compose(gate=gate, theta=1.0, gate_context=context))(outputs, batch)
    for key in default[1]:
        assert float(default[1][key]) == float(explicit[1][key]), key  # bit for bit


def test_batch_context_gamma_is_the_flattened_ccc():
    outputs, batch = make_outputs(b=4)
    _, metrics = losses.compose(gate="paper", theta=0.5, gate_context="batch")(outputs, batch)
    teacher, labels = np.asarray(outputs["teacher_pred"]), np.asarray(batch["labels"])
    flat = [1.0 - ccc64(teacher[..., k], labels[..., k]) for k in range(labels.shape[-1])]
    assert float(metrics["teacher_gamma"]) == pytest.approx(float(np.mean(flat)), abs=1e-5)
    assert float(metrics["gamma_q10"]) == pytest.approx(float(metrics["gamma_q90"]), abs=1e-6)
    assert float(metrics["distilled_fraction"]) in (0.0, 1.0)  # one decision for the whole batch


def test_window_context_takes_gamma_from_the_batch():
    outputs, batch = make_outputs(b=4)
    batch = dict(batch, gate_gamma=jnp.asarray([0.1, 0.5, 0.15, 1.3]))
    _, metrics = losses.compose(gate="paper", theta=0.2, gate_context="window")(outputs, batch)
    assert float(metrics["distilled_fraction"]) == 0.5
    assert float(metrics["teacher_gamma"]) == pytest.approx(np.mean([0.1, 0.5, 0.15, 1.3]))
    assert float(metrics["gamma_q50"]) == pytest.approx(np.quantile([0.1, 0.5, 0.15, 1.3], 0.5))
    with pytest.raises(ValueError, match="gate_gamma"):
        losses.compose(gate="paper", gate_context="window")(*make_outputs(b=4))


def test_user_gates_ask_for_the_context_through_a_gamma_keyword():
    outputs, batch = make_outputs(b=4)
    batch = dict(batch, gate_gamma=jnp.asarray([0.0, 1.0, 0.0, 1.0]))
    seen = {}

    def my_gate(teacher_pred, labels, mask, *, gamma=None):
        seen["gamma"] = gamma
        on = (gamma < 0.5).astype(jnp.float32)
        return losses.GateWeights(1.0 - 0.5 * on, 0.5 * on, on, gamma)

    _, metrics = losses.compose(gate=my_gate, gate_context="window")(outputs, batch)
    np.testing.assert_array_equal(np.asarray(seen["gamma"]), [0.0, 1.0, 0.0, 1.0])
    assert float(metrics["distilled_fraction"]) == 0.5

    def old_gate(teacher_pred, labels, mask):
        return losses.gate_none(teacher_pred, labels, mask, alpha=0.2)

    losses.compose(gate=old_gate)(outputs, batch)  # no context: called as before
    with pytest.raises(ValueError, match="gamma"):
        losses.compose(gate=old_gate, gate_context="window")
    with pytest.raises(ValueError, match="window"):
        losses.compose(gate="paper", gate_context="video")


def test_several_teachers_each_gated_then_averaged_or_the_best_taken():
    outputs, batch = make_outputs(b=4)
    rng = np.random.default_rng(3)
    second_emb = jnp.asarray(rng.normal(size=np.shape(outputs["teacher_emb"])).astype(np.float32))
    gammas = (jnp.asarray([0.1, 0.5, 0.1, 0.9]), jnp.asarray([0.05, 0.1, 0.9, 0.9]))
    two = {
        **outputs,
        "teacher_pred": (outputs["teacher_pred"],) * 2,
        "teacher_emb": (outputs["teacher_emb"], second_emb),
    }
    two_batch = {**batch, "gate_gamma": gammas}
    kw = dict(ccc="per_sequence", gate="paper", alpha=0.2, gate_context="window")
    parts = [losses.compose_parts(theta=0.2, **kw), losses.compose_parts(theta=0.3, **kw)]
    # One teacher: the single-teacher loss, whatever the rule.
    single = losses.compose(theta=0.2, **kw)(outputs, {**batch, "gate_gamma": gammas[0]})[0]
    one = {**outputs, "teacher_pred": (outputs["teacher_pred"],), "teacher_emb": (outputs["teacher_emb"],)}
    for rule in losses.COMBINE_RULES:
        got = losses.combine_teachers(parts[:1], rule)(one, {**batch, "gate_gamma": gammas[:1]})[0]
        assert float(got) == pytest.approx(float(single), abs=1e-6)
    l_ccc = np.asarray(losses.ccc_loss(outputs["pred"], batch["labels"], per_sequence=True))
    l_cos = [
        np.asarray(losses.cosine_distillation(e, outputs["emb"], per_sequence=True))
        for e in (outputs["teacher_emb"], second_emb)
    ]
    g0, g1 = (np.asarray(g) for g in gammas)
    term = lambda k, i: 0.2 * l_cos[k][i] + (g0, g1)[k][i] * l_ccc[i]  # teacher k trusted on sequence i
    # Trusted: teacher 0 on sequences 0, 2 (gamma <= 0.2); teacher 1 on 0, 1 (gamma <= 0.3).
    average = [(term(0, 0) + term(1, 0)) / 2, term(1, 1), term(0, 2), l_ccc[3]]
    loss, metrics = losses.combine_teachers(parts, "average")(two, two_batch)
    assert float(loss) == pytest.approx(np.mean(average), abs=1e-5)
    assert float(metrics["distilled_fraction"]) == 0.75
    assert float(metrics["distilled_fraction_0"]) == 0.5 and float(metrics["distilled_fraction_1"]) == 0.5
    # Best: the lower gamma per sequence (1, 1, 0, 0 on ties the first), gated as usual.
    best = [term(1, 0), term(1, 1), term(0, 2), l_ccc[3]]
    loss, metrics = jax.jit(losses.combine_teachers(parts, "best"))(two, two_batch)
    assert float(loss) == pytest.approx(np.mean(best), abs=1e-5)
    assert float(metrics["used_fraction_0"]) == 0.5 and float(metrics["distilled_fraction"]) == 0.75
    with pytest.raises(ValueError, match="choose one of"):
        losses.combine_teachers(parts, "vote")
