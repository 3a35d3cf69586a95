"""Weight files and the checks of `pkd_jax.weights`: FER2013 `.t7`, `.npz` without torch, conv1 channel
adaptation, loud merge errors, bad files."""

import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pkd_jax.models import GRU, VGG19BN, ResNet18  # noqa: E402
from pkd_jax.testing.torch_reference import (  # noqa: E402
    ResNet18Torch,
    StudentTorch,
    TeacherTorch,
    VGG19BNTorch,
    make_rnn,
    randomize_batch_norm_,
)
from pkd_jax.weights import (  # noqa: E402
    flatten_tree,
    gru_from_torch,
    linear_from_torch,
    load_npz,
    load_torch_file,
    lstm_from_torch,
    merge_into,
    resnet18_from_torch,
    save_npz,
    student_from_torch,
    teacher_from_torch,
    torch_to_npz,
    vgg19_bn_from_torch,
)

torch.set_num_threads(2)


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def numpy_init(model, *inputs, **kwargs):
    """Stand-in initial values with the model's shapes; `model.init` of a VGG costs tens of seconds on CPU."""
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(partial(model.init, **kwargs), jax.random.key(0), *inputs)
    return jax.tree.map(lambda s: rng.normal(0.0, 0.1, s.shape).astype(s.dtype), shapes)


def fer2013_checkpoint(ref: VGG19BNTorch) -> dict:
    """The FER2013 repo's checkpoint form: `features.*` plus its own 512 -> 7 `classifier`, no `fc`."""
    sd = {k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    channels = ref.fc.in_features // 4
    sd["classifier.weight"] = torch.randn(7, channels)
    sd["classifier.bias"] = torch.randn(7)
    return {"net": sd, "acc": 71.5, "epoch": 7}


def test_fer2013_t7_checkpoint_imports_the_conv_trunk(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    ref = randomize_batch_norm_(VGG19BNTorch(width=0.125, embed_dim=16, spatial=2), x)
    path = tmp_path / "PrivateTest_model.t7"
    torch.save(fer2013_checkpoint(ref), path)

    sd = load_torch_file(path)
    assert "classifier.weight" in sd and "features.0.weight" in sd and "fc.weight" not in sd
    tree = vgg19_bn_from_torch(sd)
    assert "fc" not in tree["params"] and "classifier" not in tree["params"]

    model = VGG19BN(width=0.125, embed_dim=16)
    initial = numpy_init(model, jnp.zeros((1, 64, 64, 3)), train=False)
    with pytest.raises(ValueError, match=r"missing params/fc/kernel \(256, 16\)"):
        merge_into(initial, tree)  # the fc left at its init must be asked for
    variables = merge_into(initial, tree, allow_missing=["fc"])
    np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], initial["params"]["fc"]["kernel"])
    np.testing.assert_array_equal(
        variables["params"]["features_0"]["kernel"],
        ref.features[0].weight.detach().numpy().transpose(2, 3, 1, 0),
    )
    # With the fc set alike on both sides, the whole trunk agrees.
    with torch.no_grad():
        ref.fc.weight.copy_(torch.from_numpy(np.asarray(initial["params"]["fc"]["kernel"]).T.copy()))
        ref.fc.bias.copy_(torch.from_numpy(np.array(initial["params"]["fc"]["bias"])))
        want = ref(x).numpy()
    got = jax.jit(partial(model.apply, train=False))(variables, jnp.asarray(x.numpy().transpose(0, 2, 3, 1)))
    assert rel_err(got, want) <= 1e-4


def test_npz_round_trip_needs_no_torch(tmp_path, monkeypatch):
    model = GRU(hidden=6)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 2, 4)))
    variables = {**variables, "batch_stats": {"bn": {"mean": np.arange(3, dtype=np.float32)}}}
    torch_named = {"features.0.weight": np.ones((2, 3, 3, 3), np.float32), "features.0.bias": np.zeros(2)}
    np.savez(tmp_path / "vgg.npz", **torch_named)

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    save_npz(tmp_path / "gru.npz", variables)
    loaded = load_npz(tmp_path / "gru.npz")
    want, got = flatten_tree(variables), flatten_tree(loaded)
    assert got.keys() == want.keys()
    assert "params/input/kernel" in got
    for name, leaf in want.items():
        assert got[name].dtype == np.asarray(leaf).dtype
        np.testing.assert_array_equal(got[name], leaf)
    assert load_torch_file(tmp_path / "vgg.npz").keys() == torch_named.keys()
    (tmp_path / "w.pth").write_bytes(b"x")
    with pytest.raises(ImportError, match=r"w\.pth.*pip install torch"):
        load_torch_file(tmp_path / "w.pth")


def test_bfloat16_trees_save_as_float32(tmp_path):
    save_npz(tmp_path / "bf16.npz", {"params": {"w": jnp.ones((2,), jnp.bfloat16)}})
    assert load_npz(tmp_path / "bf16.npz")["params"]["w"].dtype == np.float32


def test_torch_to_npz_keeps_the_state_dict(tmp_path):
    ref = make_rnn("gru", 4, 6)
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "gru.pt")
    torch_to_npz(tmp_path / "gru.pt", tmp_path / "gru.npz")
    a, b = load_torch_file(tmp_path / "gru.pt"), load_torch_file(tmp_path / "gru.npz")
    assert a.keys() == b.keys() == ref.state_dict().keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_data_parallel_prefix_is_removed(tmp_path):
    ref = torch.nn.Linear(3, 2)
    torch.save({f"module.{k}": v for k, v in ref.state_dict().items()}, tmp_path / "dp.pth")
    assert set(load_torch_file(tmp_path / "dp.pth")) == {"weight", "bias"}


def test_conv1_three_to_one_channels_is_the_channel_sum():
    torch.manual_seed(1)
    ref = ResNet18Torch(in_channels=3, width=0.25)
    x = torch.randn(2, 1, 32, 40)
    randomize_batch_norm_(ref, x.expand(-1, 3, -1, -1))
    sd = ref.state_dict()
    weight = sd["conv1.weight"].numpy()

    same = resnet18_from_torch(sd)
    np.testing.assert_array_equal(same["params"]["conv1"]["kernel"], weight.transpose(2, 3, 1, 0))
    adapted = resnet18_from_torch(sd, in_channels=1)
    kernel = adapted["params"]["conv1"]["kernel"]
    assert kernel.shape == (7, 7, 1, 16)
    np.testing.assert_allclose(kernel[:, :, 0], weight.sum(axis=1).transpose(1, 2, 0), rtol=1e-6)
    # Exactly what a grey input copied to three channels would give.
    with torch.no_grad():
        want = ref.features(x.expand(-1, 3, -1, -1)).numpy()
    model = ResNet18(width=0.25)
    x_nhwc = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
    variables = merge_into(numpy_init(model, x_nhwc, train=False), adapted)
    assert rel_err(jax.jit(partial(model.apply, train=False))(variables, x_nhwc), want) <= 1e-4
    with pytest.raises(ValueError, match="from 3 to 2 input channels"):
        resnet18_from_torch(sd, in_channels=2)


def test_merge_into_names_mismatched_missing_and_unexpected():
    model = GRU(hidden=8)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 2, 4)))
    wrong = gru_from_torch(make_rnn("gru", 5, 8).state_dict())  # input size 5, model has 4
    with pytest.raises(ValueError) as info:
        merge_into(variables, wrong)
    message = str(info.value)
    assert "shape mismatch params/input/kernel: model (4, 24), imported (5, 24)" in message
    assert "hidden_kernel" not in message  # only the wrong names are listed

    partial_tree = {"params": {"input": {"kernel": np.zeros((4, 24), np.float32)}, "extra": np.zeros(3)}}
    with pytest.raises(ValueError) as info:
        merge_into(variables, partial_tree)
    message = str(info.value)
    assert "missing params/input/bias (24,)" in message and "missing params/hidden_kernel (8, 24)" in message
    assert "unexpected params/extra (3,)" in message

    with pytest.raises(ValueError, match="no params/encoder in the model"):
        merge_into(variables, linear_from_torch(torch.nn.Linear(4, 2).state_dict()), path="encoder")
    with pytest.raises(ValueError, match="expected collections"):
        merge_into(variables, {"kernel": np.zeros(2)}, path="input")


def test_merge_into_returns_a_new_tree_and_takes_bare_subtrees():
    model = GRU(hidden=8)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 2, 4)))
    before = jax.tree.map(np.array, variables)
    ref = make_rnn("gru", 4, 8)
    merged = merge_into(variables, gru_from_torch(ref.state_dict()))
    bare = merge_into(variables, gru_from_torch(ref.state_dict())["params"], path="params")
    jax.tree.map(np.testing.assert_array_equal, variables, before)  # input untouched
    jax.tree.map(np.testing.assert_array_equal, merged, bare)
    np.testing.assert_array_equal(merged["params"]["hidden_kernel"], ref.weight_hh_l0.detach().numpy().T)


def test_wrong_recurrent_kind_and_stacked_layers_are_errors():
    with pytest.raises(ValueError, match="not a gru"):
        gru_from_torch(make_rnn("lstm", 4, 6).state_dict())
    with pytest.raises(ValueError, match="not a lstm"):
        lstm_from_torch(make_rnn("gru", 4, 6).state_dict())
    with pytest.raises(ValueError, match=r"unexpected \['bias_hh_l1'"):
        gru_from_torch(torch.nn.GRU(4, 6, num_layers=2).state_dict())


def test_whole_model_state_dicts_reject_unknown_keys():
    sd = StudentTorch(
        vgg_width=0.125, spatial=2, visual_features=16, rnn_hidden=24, head_features=(8, 8, 8, 8)
    )
    sd = dict(sd.state_dict())
    tree = student_from_torch(sd)
    assert sorted(tree["params"]["head"]) == ["dense_0", "dense_1", "dense_2", "dense_3", "out"]
    with pytest.raises(ValueError, match=r"outside .*\['optimizer.step'\]"):
        student_from_torch({**sd, "optimizer.step": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"unexpected module 'classifier_2'"):
        student_from_torch({**sd, "cnn.cnn_backbone.classifier_2.weight": torch.zeros(3, 4)})
    del sd["rnn.out_layer2.weight"], sd["rnn.out_layer2.bias"]
    with pytest.raises(ValueError, match=r"numbered 1\.\.N, found \[1, 3, 4, 5\]"):
        student_from_torch(sd)


def test_teacher_audio_trunk_reads_positional_and_torchvision_names():
    ref = TeacherTorch(
        vgg_width=0.125, spatial=2, visual_features=16, rnn_hidden=24, audio_width=0.125, audio_channels=3,
        fusion_visual_features=20, fused_features=(16, 12),
    )  # fmt: skip
    sd = ref.state_dict()
    children = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
    prefix = "spec_cnn.cnn_spec_backbone."
    renamed = {}
    for key, value in sd.items():
        if key.startswith(prefix):
            first, rest = key[len(prefix) :].split(".", 1)
            key = prefix + children[first] + "." + rest
        renamed[key] = value
    a, b = teacher_from_torch(sd, audio_in_channels=1), teacher_from_torch(renamed, audio_in_channels=1)
    assert flatten_tree(a).keys() == flatten_tree(b).keys()
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert a["params"]["audio_cnn"]["conv1"]["kernel"].shape == (7, 7, 1, 8)
    assert sorted(a["params"]["head"]) == ["fused_0", "fused_1", "out", "visual_proj"]


@pytest.mark.parametrize("name, content", [("weights.pth", b"not a checkpoint"), ("weights.npz", b"PK junk")])
def test_corrupt_files_name_the_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"could not read .*{name}"):
        load_torch_file(path)


def test_unknown_missing_and_non_state_dict_files_name_the_file(tmp_path):
    (tmp_path / "weights.h5").write_bytes(b"")
    with pytest.raises(ValueError, match=r"weights\.h5: unknown weights format '\.h5'"):
        load_torch_file(tmp_path / "weights.h5")
    with pytest.raises(FileNotFoundError, match=r"absent\.pth"):
        load_torch_file(tmp_path / "absent.pth")
    torch.save({"acc": 1.0, "epoch": 2}, tmp_path / "meta.pth")
    with pytest.raises(ValueError, match=r"meta\.pth: entries \['acc', 'epoch'\] are not tensors"):
        load_torch_file(tmp_path / "meta.pth")
