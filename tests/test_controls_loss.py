"""The positive control's loss: clips of unlabelled recordings (`data.labelled_recordings`).

Unit tests on small arrays, no training: the masked CCC is today's CCC when every clip is labelled, 0
without a labelled clip, and passes gradients only through labelled clips' predictions.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pkd_jax import losses

B, T, K, D = 4, 6, 2, 8


def example(seed: int = 0) -> tuple[dict, dict]:
    """Student and teacher outputs and a batch with a masked frame, as the train step gives the loss."""
    rng = np.random.default_rng(seed)
    labels = rng.uniform(-1, 1, (B, T, K)).astype(np.float32)
    outputs = {
        "pred": jnp.asarray(labels + rng.normal(0, 0.5, labels.shape), jnp.float32),
        "emb": jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32),
        "teacher_pred": jnp.asarray(labels + rng.normal(0, 0.2, labels.shape), jnp.float32),
        "teacher_emb": jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32),
    }
    label_mask = np.ones((B, T), np.float32)
    label_mask[1, :2] = 0.0  # an invalid label, as Aff-Wild2's -5
    batch = {
        "labels": jnp.asarray(labels),
        "label_mask": jnp.asarray(label_mask),
        "frame_mask": jnp.ones((B, T), jnp.float32),
        "gate_gamma": jnp.asarray([0.1, 0.5, 0.2, 0.9], jnp.float32),
    }
    return outputs, batch


def with_flags(batch: dict, flags) -> dict:
    return {**batch, "labelled": jnp.asarray(flags, jnp.float32)}


LOSSES = {
    "flattened, paper gate by window": dict(ccc="flattened", gate="paper", theta=0.4, gate_context="window"),
    "per_sequence, paper gate by clip": dict(ccc="per_sequence", gate="paper", theta=0.4),
    "flattened, released code's gate": dict(
        ccc="flattened", gate="released_code", distill="flattened_cosine"
    ),
    "per_sequence, no gate": dict(ccc="per_sequence", gate="none"),
}


@pytest.mark.parametrize("reduction", ["flattened", "per_sequence"])
def test_masked_ccc_term_is_todays_when_every_clip_is_labelled(reduction):
    outputs, batch = example()
    term = losses.ccc_term(reduction)
    np.testing.assert_array_equal(term(outputs, with_flags(batch, np.ones(B))), term(outputs, batch))


@pytest.mark.parametrize("settings", list(LOSSES.values()), ids=list(LOSSES))
def test_student_loss_and_metrics_are_todays_when_every_clip_is_labelled(settings):
    outputs, batch = example()
    loss_fn = losses.compose(**settings)
    loss, metrics = loss_fn(outputs, batch)
    flagged_loss, flagged = loss_fn(outputs, with_flags(batch, np.ones(B)))
    assert float(flagged_loss) == pytest.approx(float(loss), rel=1e-6)  # summed in another order
    assert {k: float(v) for k, v in flagged.items() if k != "loss"} == {
        k: float(v) for k, v in metrics.items() if k != "loss"
    }


@pytest.mark.parametrize("reduction", ["flattened", "per_sequence"])
def test_supervision_is_the_labelled_clips_alone_undiluted_and_distillation_spans_every_clip(reduction):
    """Unlabelled clips add their distillation term; the supervised term keeps the weight it has in a
    batch of the labelled clips alone (a baseline's batch), whatever the unlabelled share."""
    outputs, batch = example()
    alpha, flags = 0.3, np.array([1.0, 0.0, 1.0, 0.0])
    loss_fn = losses.compose(ccc=reduction, gate="none", alpha=alpha)
    mixed, _ = loss_fn(outputs, with_flags(batch, flags))
    take = lambda tree: {k: v[flags == 1] for k, v in tree.items()}
    _, alone = loss_fn(take(outputs), take(batch))  # the labelled clips as a batch of their own
    _, everyone = loss_fn(outputs, batch)  # the distillation term over every clip
    expected = (1 - alpha) * float(alone["ccc_loss"]) + alpha * float(everyone["distill_loss"])
    assert float(mixed) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("reduction", ["flattened", "per_sequence"])
def test_masked_ccc_term_is_zero_without_a_labelled_clip(reduction):
    outputs, batch = example()
    value = np.asarray(losses.ccc_term(reduction)(outputs, with_flags(batch, np.zeros(B))))
    assert np.all(np.isfinite(value)) and np.all(value == 0.0)


@pytest.mark.parametrize("settings", list(LOSSES.values()), ids=list(LOSSES))
def test_without_labelled_clips_only_distillation_remains_and_every_clip_is_distilled(settings):
    outputs, batch = example()
    loss_fn = losses.compose(**settings)
    loss, metrics = loss_fn(outputs, with_flags(batch, np.zeros(B)))
    assert np.isfinite(float(loss))
    assert float(metrics["ccc_loss"]) == 0.0 and float(metrics["ccc_weight"]) == 0.0
    assert float(metrics["distilled_fraction"]) == 1.0  # no labels: no evidence against the teacher
    assert float(loss) == pytest.approx(float(metrics["distill_weight"] * metrics["distill_loss"]), rel=1e-6)
    grads = jax.grad(lambda o: loss_fn(o, with_flags(batch, np.zeros(B)))[0])(outputs)
    assert np.all(np.asarray(grads["pred"]) == 0.0) and np.all(np.isfinite(np.asarray(grads["emb"])))


def test_gradients_reach_only_labelled_clips_predictions_and_every_clips_embedding():
    outputs, batch = example()
    flags = np.array([1.0, 0.0, 1.0, 0.0])
    for settings in LOSSES.values():
        loss_fn = losses.compose(**settings)
        grads = jax.grad(lambda o, fn=loss_fn: fn(o, with_flags(batch, flags))[0])(outputs)
        per_clip = np.abs(np.asarray(grads["pred"])).sum(axis=(1, 2))
        assert np.all(per_clip[flags == 0] == 0.0) and np.all(per_clip[flags == 1] > 0), settings
        emb = np.abs(np.asarray(grads["emb"])).sum(axis=(1, 2))
        assert np.all(emb[flags == 0] > 0), settings  # unlabelled clips are distilled


def test_unlabelled_clips_labels_do_not_reach_the_loss():
    outputs, batch = example()
    flags = np.array([1.0, 0.0, 1.0, 0.0])
    changed = {**batch, "labels": batch["labels"].at[1].set(jnp.nan).at[3].multiply(-1.0)}
    for settings in LOSSES.values():
        loss_fn = losses.compose(**settings)
        a, ma = loss_fn(outputs, with_flags(batch, flags))
        b, mb = loss_fn(outputs, with_flags(changed, flags))
        assert float(a) == float(b) and float(ma["teacher_gamma"]) == float(mb["teacher_gamma"]), settings


def test_teacher_gamma_is_reported_over_labelled_clips_and_the_share_counts_unlabelled_ones():
    outputs, batch = example()
    loss_fn = losses.compose(gate="paper", theta=0.4, gate_context="window")
    _, metrics = loss_fn(outputs, with_flags(batch, [1.0, 1.0, 0.0, 0.0]))
    assert float(metrics["teacher_gamma"]) == pytest.approx((0.1 + 0.5) / 2)
    # Clip 0 passes theta, clip 1 does not, clips 2 and 3 have no labels: distilled.
    assert float(metrics["distilled_fraction"]) == pytest.approx(3 / 4)
