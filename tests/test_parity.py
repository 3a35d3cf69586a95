"""PyTorch -> Flax parity: random PyTorch weights (BN statistics included), imported with
`pkd_jax.weights`, give the same inference outputs (max relative error <= 1e-4 in float32)."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pkd_jax.models import GRU, LSTM, VGG19BN, ResNet18, Student, Teacher  # noqa: E402
from pkd_jax.weights import (  # noqa: E402
    gru_from_torch,
    lstm_from_torch,
    merge_into,
    resnet18_from_torch,
    student_from_torch,
    teacher_from_torch,
    vgg19_bn_from_torch,
)
from tests.torch_reference import (  # noqa: E402
    ResNet18Torch,
    StudentTorch,
    TeacherTorch,
    VGG19BNTorch,
    make_rnn,
    randomize_batch_norm_,
)

TOL = 1e-4
torch.set_num_threads(2)

# Small sizes shared by the whole-network tests (64x64 frames leave a 2x2 map, so the flatten order counts).
TINY_VISUAL = dict(vgg_width=0.125, visual_features=16, rnn_hidden=24)
HEAD = dict(head_features=(20, 16, 12, 8), embed_index=2, num_targets=2)
FUSION = dict(audio_width=0.125, fusion_visual_features=20, fused_features=(16, 12), num_targets=2)


def rel_err(got, want) -> float:
    """max |got - want| / max |want|."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def assert_close(name: str, got, want) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    err = rel_err(got, want)
    print(f"{name}: max relative error {err:.2e}")
    assert err <= TOL, (name, err)


def abstract_variables(model, *inputs, **kwargs):
    """Variable shapes only: the import replaces every value, so no real init is needed."""
    return jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs, **kwargs))


def run(model, variables, *inputs, **kwargs):
    """Jitted inference: one compile is cheaper here than op-by-op dispatch."""
    return jax.jit(partial(model.apply, **kwargs))(variables, *inputs)


def nhwc(x: "torch.Tensor") -> jnp.ndarray:
    """[..., C, H, W] torch tensor -> [..., H, W, C] array."""
    return jnp.asarray(np.moveaxis(x.numpy(), -3, -1))


def test_vgg19_bn_full_size_trunk():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 112, 112)
    ref = randomize_batch_norm_(VGG19BNTorch(), x)
    with torch.no_grad():
        want = ref(x).numpy()
    model = VGG19BN()
    variables = merge_into(
        abstract_variables(model, nhwc(x), train=False), vgg19_bn_from_torch(ref.state_dict())
    )
    assert_close("vgg19_bn 112x112", run(model, variables, nhwc(x), train=False), want)


@pytest.mark.parametrize(
    "width, channels, size",
    [(1.0, 1, (64, 101)), (0.25, 3, (40, 56))],
    ids=["full-1ch-64x101", "quarter-3ch"],
)
def test_resnet18_trunk(width, channels, size):
    torch.manual_seed(1)
    x = torch.randn(2, channels, *size)
    ref = randomize_batch_norm_(ResNet18Torch(channels, width), x)
    with torch.no_grad():
        want = ref.features(x).numpy()
    model = ResNet18(width=width)
    variables = merge_into(
        abstract_variables(model, nhwc(x), train=False), resnet18_from_torch(ref.state_dict())
    )
    assert_close(f"resnet18 w={width} c={channels}", run(model, variables, nhwc(x), train=False), want)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_recurrent_with_initial_carry_and_chunks(kind):
    torch.manual_seed(2)
    batch, steps, dim, hidden = 3, 10, 16, 24
    ref = make_rnn(kind, dim, hidden)
    x = torch.randn(batch, steps, dim)
    h0 = torch.randn(batch, hidden) * 0.5
    c0 = torch.randn(batch, hidden) * 0.5
    with torch.no_grad():
        if kind == "gru":
            want, want_h = ref(x, h0[None])
            want_carry = want_h[0].numpy()
        else:
            want, (want_h, want_c) = ref(x, (h0[None], c0[None]))
            want_carry = (want_h[0].numpy(), want_c[0].numpy())
    model = GRU(hidden=hidden) if kind == "gru" else LSTM(hidden=hidden)
    convert = gru_from_torch if kind == "gru" else lstm_from_torch
    variables = merge_into(abstract_variables(model, jnp.asarray(x.numpy())), convert(ref.state_dict()))
    carry0 = jnp.asarray(h0.numpy()) if kind == "gru" else (jnp.asarray(h0.numpy()), jnp.asarray(c0.numpy()))
    xs = jnp.asarray(x.numpy())

    apply = jax.jit(model.apply)  # one wrapper, so both equal-length chunks share a compile
    out, carry = apply(variables, xs, carry0)
    assert_close(f"{kind} one pass", out, want.numpy())
    for got, expected in zip(jax.tree.leaves(carry), jax.tree.leaves(want_carry), strict=True):
        assert_close(f"{kind} final carry", got, expected)

    first, mid = apply(variables, xs[:, :5], carry0)
    second, end = apply(variables, xs[:, 5:], mid)
    assert_close(f"{kind} two chunks", jnp.concatenate([first, second], axis=1), want.numpy())
    for got, expected in zip(jax.tree.leaves(end), jax.tree.leaves(want_carry), strict=True):
        assert_close(f"{kind} chunked final carry", got, expected)


@pytest.mark.parametrize("activation, rnn", [("none", "gru"), ("relu", "gru"), ("relu", "lstm")])
def test_whole_student(activation, rnn):
    torch.manual_seed(3)
    frames = torch.rand(2, 4, 3, 64, 64)
    ref = StudentTorch(spatial=2, rnn=rnn, activation=activation, **TINY_VISUAL, **HEAD)
    randomize_batch_norm_(ref, frames)
    with torch.no_grad():
        want_pred, want_emb = (t.numpy() for t in ref(frames))
    model = Student(rnn=rnn, activation=activation, **TINY_VISUAL, **HEAD)
    variables = merge_into(abstract_variables(model, nhwc(frames)), student_from_torch(ref.state_dict()))
    pred, emb = run(model, variables, nhwc(frames))
    assert_close(f"student {activation} {rnn} predictions", pred, want_pred)
    assert_close(f"student {activation} {rnn} embedding", emb, want_emb)


@pytest.mark.parametrize(
    "activation, audio_channels", [("none", 3), ("relu", 1)], ids=["none-3ch", "relu-1ch"]
)
def test_whole_teacher(activation, audio_channels):
    torch.manual_seed(4)
    frames = torch.rand(2, 4, 3, 64, 64)
    audio = torch.randn(2, 4, audio_channels, 32, 40)
    ref = TeacherTorch(
        spatial=2, audio_channels=audio_channels, activation=activation, **TINY_VISUAL, **FUSION
    )
    randomize_batch_norm_(ref, frames, audio)
    with torch.no_grad():
        want_pred, want_emb = (t.numpy() for t in ref(frames, audio))
    model = Teacher(activation=activation, **TINY_VISUAL, **FUSION)
    inputs = (nhwc(frames), nhwc(audio))
    variables = merge_into(abstract_variables(model, *inputs), teacher_from_torch(ref.state_dict()))
    pred, emb = run(model, variables, *inputs)
    assert_close(f"teacher {activation} {audio_channels}ch predictions", pred, want_pred)
    assert_close(f"teacher {activation} {audio_channels}ch embedding", emb, want_emb)
