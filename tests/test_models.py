"""Model shapes, parameter counts (paper Table 3), streaming with a carry, train/inference modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pkd_jax.models import (
    GRU,
    LSTM,
    VGG19BN,
    JCASettings,
    JointCrossAttention,
    MLPHead,
    ResNet18,
    Student,
    Teacher,
)
from pkd_jax.models.vgg import feature_layer_indices

TINY = dict(vgg_width=0.125, visual_features=16, rnn_hidden=24, cnn_dropout=0.2)


def n_params(tree) -> int:
    return sum(x.size for x in jax.tree.leaves(tree))


def abstract_init(model, *inputs, **kwargs):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs, **kwargs))


def test_recola_parameter_counts_match_paper_table3():
    frames = jnp.zeros((1, 2, 112, 112, 3))
    audio = jnp.zeros((1, 2, 64, 101, 1))
    student = n_params(abstract_init(Student(num_targets=1), frames)["params"])
    teacher = n_params(abstract_init(Teacher(num_targets=1), frames, audio)["params"])
    assert abs(student - 27.8e6) <= 0.1e6, student
    assert abs(teacher - 39.7e6) <= 0.2e6, teacher


def test_vgg_layer_indices_are_torchvision_features_indices():
    assert feature_layer_indices() == [0, 3, 7, 10, 14, 17, 20, 23, 27, 30, 33, 36, 40, 43, 46, 49]


def test_full_size_trunk_shapes():
    vgg = abstract_init(VGG19BN(), jnp.zeros((1, 112, 112, 3)), train=False)
    assert vgg["params"]["fc"]["kernel"].shape == (4608, 512)  # 512 x 3 x 3 flattened
    resnet = ResNet18()
    variables = abstract_init(resnet, jnp.zeros((1, 64, 101, 1)), train=False)
    out = jax.eval_shape(lambda v, x: resnet.apply(v, x, train=False), variables, jnp.zeros((3, 64, 101, 1)))
    assert out.shape == (3, 512)
    three = abstract_init(ResNet18(), jnp.zeros((1, 64, 64, 3)), train=False)
    assert three["params"]["conv1"]["kernel"].shape == (7, 7, 3, 64)


@pytest.mark.parametrize("targets", [1, 2])
def test_student_and_teacher_return_predictions_and_embeddings(targets):
    frames = jnp.ones((2, 3, 32, 32, 3)) * 0.5
    audio = jnp.ones((2, 3, 16, 20, 1))
    student = Student(num_targets=targets, head_features=(16, 12, 8, 4), **TINY)
    v = student.init(jax.random.key(0), frames)
    pred, emb = student.apply(v, frames)
    assert pred.shape == (2, 3, targets) and emb.shape == (2, 3, 8)
    teacher = Teacher(
        num_targets=targets, audio_width=0.125, fusion_visual_features=20, fused_features=(12, 6), **TINY
    )
    v = teacher.init(jax.random.key(0), frames, audio)
    pred, emb = teacher.apply(v, frames, audio)
    assert pred.shape == (2, 3, targets) and emb.shape == (2, 3, 6)
    with pytest.raises(ValueError, match="audio windows"):
        teacher.apply(v, frames, audio[:, :2])


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_streaming_in_chunks_equals_one_pass(rnn):
    frames = jax.random.uniform(jax.random.key(1), (2, 8, 32, 32, 3))
    student = Student(rnn=rnn, head_features=(16, 12, 8, 4), **TINY)
    v = student.init(jax.random.key(0), frames)
    whole, _ = student.apply(v, frames)
    carry = student.zero_carry(2)
    parts = []
    for chunk in (frames[:, :3], frames[:, 3:]):
        pred, _, carry = student.apply(v, chunk, carry, method="stream")
        parts.append(pred)
    np.testing.assert_allclose(np.concatenate(parts, 1), whole, rtol=1e-5, atol=1e-6)
    # A fresh zero state per chunk is different: the carry matters.
    restarted = student.apply(v, frames[:, 3:])[0]
    assert not np.allclose(restarted, whole[:, 3:], atol=1e-6)


def test_train_mode_updates_batch_stats_and_uses_dropout():
    frames = jax.random.uniform(jax.random.key(2), (2, 3, 32, 32, 3))
    student = Student(head_features=(16, 12, 8, 4), **TINY)
    v = student.init(jax.random.key(0), frames)
    run = lambda key: student.apply(v, frames, train=True, rngs={"dropout": key}, mutable=["batch_stats"])
    (p1, _), new_vars = run(jax.random.key(3))
    (p2, _), _ = run(jax.random.key(4))
    assert not np.allclose(p1, p2)  # different dropout keys
    old = jax.tree.leaves(v["batch_stats"])
    new = jax.tree.leaves(new_vars["batch_stats"])
    assert any(not np.allclose(a, b) for a, b in zip(old, new, strict=True))
    e1 = student.apply(v, frames)[0]
    np.testing.assert_array_equal(e1, student.apply(v, frames)[0])  # inference is deterministic


def test_activation_setting_changes_the_head_and_unknown_is_an_error():
    x = jax.random.normal(jax.random.key(0), (2, 5, 16))
    plain, relu = MLPHead(features=(8, 8, 4, 4)), MLPHead(features=(8, 8, 4, 4), activation="relu")
    v = plain.init(jax.random.key(1), x)
    assert not np.allclose(plain.apply(v, x)[0], relu.apply(v, x)[0])
    assert np.all(np.asarray(relu.apply(v, x)[1]) >= 0)
    with pytest.raises(ValueError, match="unknown activation"):
        MLPHead(activation="swish").init(jax.random.key(1), x)


def test_bf16_compute_keeps_float32_params():
    frames = jnp.ones((1, 2, 32, 32, 3))
    student = Student(head_features=(16, 12, 8, 4), dtype=jnp.bfloat16, **TINY)
    v = student.init(jax.random.key(0), frames)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(v["params"]))
    pred, _ = student.apply(v, frames)
    assert pred.dtype == jnp.float32 and np.all(np.isfinite(pred))


def test_recurrent_layers_carry_shapes():
    x = jnp.ones((2, 4, 6))
    gru, lstm = GRU(hidden=5), LSTM(hidden=5)
    out, h = gru.apply(gru.init(jax.random.key(0), x), x)
    assert out.shape == (2, 4, 5) and h.shape == (2, 5)
    np.testing.assert_allclose(out[:, -1], h)
    out, (h, c) = lstm.apply(lstm.init(jax.random.key(0), x), x)
    assert out.shape == (2, 4, 5) and c.shape == (2, 5)


def test_joint_cross_attention_shapes_residual_and_length_check():
    audio = jax.random.normal(jax.random.key(0), (2, 8, 32))
    visual = jax.random.normal(jax.random.key(1), (2, 8, 48))
    jca = JointCrossAttention(JCASettings(length=8, dim=16, k=4, hidden=12))
    v = jca.init(jax.random.key(2), {"audio": audio, "visual": visual}, train=False)
    assert v["params"]["w_ja"].shape == (8, 8) and v["params"]["w_a"].shape == (8, 4)
    assert v["params"]["w_ca"]["kernel"].shape == (32, 4)  # 2d' -> k
    pred, emb = jca.apply(v, {"audio": audio, "visual": visual}, train=False)
    assert pred.shape == (2, 8, 2) and emb.shape == (2, 8, 12)
    # Time mixing: changing the audio at one step changes predictions at other steps.
    pred2, _ = jca.apply(v, {"audio": audio.at[:, 0].add(1.0), "visual": visual}, train=False)
    assert not np.allclose(pred[:, 5], pred2[:, 5])
    with pytest.raises(ValueError, match="built for 8 steps"):
        jca.apply(v, {"audio": audio[:, :4], "visual": visual[:, :4]}, train=False)
    with pytest.raises(ValueError, match="built for 2 of the streams"):
        jca.apply(v, {"audio": audio, "visual": visual, "physio": audio}, train=False)


def test_joint_cross_attention_fuses_three_streams():
    streams = {
        name: jax.random.normal(jax.random.key(i), (2, 8, size))
        for i, (name, size) in enumerate((("audio", 32), ("visual", 48), ("physio", 6)))
    }
    jca = JointCrossAttention(
        JCASettings(length=8, dim=16, k=4, hidden=12, embedding="attended", num_modalities=3)
    )
    v = jca.init(jax.random.key(3), streams, train=False)
    assert v["params"]["w_jp"].shape == (8, 8) and v["params"]["physio_proj"]["kernel"].shape == (6, 16)
    assert v["params"]["w_cp"]["kernel"].shape == (48, 4)  # 3d' -> k
    pred, emb = jca.apply(v, streams, train=False)
    assert pred.shape == (2, 8, 2) and emb.shape == (2, 8, 48) == (2, 8, jca.embedding_size())
    # The physiological stream reaches every output step.
    pred2, _ = jca.apply(v, {**streams, "physio": streams["physio"].at[:, 0].add(1.0)}, train=False)
    assert not np.allclose(pred[:, 6], pred2[:, 6])
