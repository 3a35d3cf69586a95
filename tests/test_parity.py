"""PyTorch -> Flax parity: random PyTorch weights (BN statistics included), imported with
`pkd_jax.weights`, give the same inference outputs (max relative error <= 1e-4 in float32)."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pkd_jax.models import (  # noqa: E402
    GRU,
    LSTM,
    R3D18,
    VGG19BN,
    JCASettings,
    JointCrossAttention,
    ResNet18,
    Student,
    Teacher,
)
from pkd_jax.testing.torch_reference import (  # noqa: E402
    JointCrossAttentionTorch,
    R3D18Torch,
    ResNet18Torch,
    StudentTorch,
    TeacherTorch,
    VGG19BNTorch,
    make_rnn,
    randomize_batch_norm_,
)
from pkd_jax.weights import (  # noqa: E402
    gru_from_torch,
    load_torch_file,
    lstm_from_torch,
    merge_into,
    r3d18_from_torch,
    resnet18_from_torch,
    student_from_torch,
    teacher_from_torch,
    vgg19_bn_from_torch,
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


# torchvision's r3d_18: 33,371,472 parameters with its 400-class fc (512 * 400 + 400 = 205,200).
R3D18_PARAMS_WITH_FC = 33_371_472
R3D18_TRUNK_PARAMS = 33_166_272


def test_r3d18_parameter_count_matches_torchvision():
    ref = R3D18Torch()
    assert sum(p.numel() for p in ref.parameters()) == R3D18_PARAMS_WITH_FC
    assert sum(p.numel() for n, p in ref.named_parameters() if not n.startswith("fc.")) == R3D18_TRUNK_PARAMS
    shapes = abstract_variables(R3D18(), jnp.zeros((1, 8, 112, 112, 3)), train=False)
    assert sum(x.size for x in jax.tree.leaves(shapes["params"])) == R3D18_TRUNK_PARAMS
    # The import of a full-size torchvision-named state dict fills every Flax parameter.
    merge_into(shapes, r3d18_from_torch(ref.state_dict()))


def test_r3d18_trunk_from_a_torch_file(tmp_path):
    """A generated torchvision-named state dict, saved as .pth, read, converted, run: same features."""
    torch.manual_seed(5)
    clips = torch.rand(2, 3, 8, 48, 48)  # [N, C, T, H, W]
    ref = randomize_batch_norm_(R3D18Torch(width=0.25), clips)
    with torch.no_grad():
        want = ref.features(clips).numpy()
    torch.save(ref.state_dict(), tmp_path / "r3d18.pth")
    model = R3D18(width=0.25, normalize=False)  # the reference takes normalised input as given
    x = jnp.asarray(clips.permute(0, 2, 3, 4, 1).numpy())  # [N, T, H, W, C]
    imported = r3d18_from_torch(load_torch_file(tmp_path / "r3d18.pth"))
    variables = merge_into(abstract_variables(model, x, train=False), imported)
    assert_close("r3d18 w=0.25 8x48x48", run(model, variables, x, train=False), want)
    with pytest.raises(ValueError, match="unexpected module"):
        r3d18_from_torch({**ref.state_dict(), "layer5.0.conv1.0.weight": torch.zeros(1, 1, 1, 1, 1)})


def jca_from_torch(ref: "torch.nn.Module") -> dict:
    """The reference's parameters under the Flax names of `JointCrossAttention`."""
    sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    dense = lambda name, bias=True: {
        "kernel": sd[f"{name}.weight"].T,
        **({"bias": sd[f"{name}.bias"]} if bias else {}),
    }
    return {
        "params": {
            "audio_proj": dense("proj_a"),
            "visual_proj": dense("proj_v"),
            "w_ja": sd["corr_a"], "w_a": sd["time_a"], "w_ha": sd["back_a"], "w_ca": dense("joint_a", False),
            "w_jv": sd["corr_v"], "w_v": sd["time_v"], "w_hv": sd["back_v"], "w_cv": dense("joint_v", False),
            "regressor_hidden": dense("hidden"),
            "regressor_out": dense("out"),
        }
    }  # fmt: skip


@pytest.mark.parametrize("embedding", ["hidden", "attended"])
def test_joint_cross_attention_matches_the_equations_in_torch(embedding):
    torch.manual_seed(6)
    length, sizes = 8, dict(dim=16, k=6, hidden=12, num_targets=2)
    ref = JointCrossAttentionTorch(audio_dim=24, visual_dim=20, length=length, **sizes).eval()
    audio, visual = torch.randn(3, length, 24), torch.randn(3, length, 20)
    with torch.no_grad():
        want_pred, want_hidden, want_attended = (t.numpy() for t in ref(audio, visual))
    settings = JCASettings(length=length, embedding=embedding, dim=16, k=6, hidden=12)
    model = JointCrossAttention(settings, num_targets=sizes["num_targets"])
    inputs = ({"audio": jnp.asarray(audio.numpy()), "visual": jnp.asarray(visual.numpy())},)
    variables = merge_into(abstract_variables(model, *inputs, train=False), jca_from_torch(ref))
    pred, emb = run(model, variables, *inputs, train=False)
    assert_close(f"jca predictions ({embedding})", pred, want_pred)
    assert_close(f"jca embedding ({embedding})", emb, want_hidden if embedding == "hidden" else want_attended)
    assert emb.shape[-1] == model.embedding_size()
