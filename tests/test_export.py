"""Model files in and out: the StableHLO export of a student (`pkd_jax.export`) round-trips through
serialization with any number of frames, and `python -m pkd_jax.weights import` turns generated PyTorch
state dicts into trunk initialisation files that `config.pretrained.*` loads, or names every mismatch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import recola_student, recola_teacher
from pkd_jax import inference, weights
from pkd_jax.config import build
from pkd_jax.inference import export
from pkd_jax.models import ResNet18
from pkd_jax.train import setup
from tests.test_predict import make_cache, make_workdir

torch = pytest.importorskip("torch")

from pkd_jax.testing.torch_reference import ResNet18Torch, VGG19BNTorch, randomize_batch_norm_  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> inference.Trained:
    root = tmp_path_factory.mktemp("export")
    workdir = make_workdir(root / "student", recola_student.get_config("tiny"), make_cache(root / "cache"))
    return inference.load_trained(workdir)


def reference(trained: inference.Trained, frames: np.ndarray, carry=None):
    """The model's own streaming step, jitted from the Python source."""
    pred, _, carry = jax.jit(
        lambda f, c: trained.model.apply(trained.variables, f / 255.0, c, method="stream")
    )(jnp.asarray(frames), carry if carry is not None else trained.model.zero_carry(frames.shape[0]))
    return np.asarray(pred), np.asarray(carry)


def test_exported_student_round_trips_for_any_frame_count_and_carries_state(student, tmp_path):
    exported = export.export_student(student)
    assert [str(d) for d in exported.in_avals[0].shape] == ["b", "t", "32", "32", "3"]
    meta = export.metadata(student, exported, inference.preprocess_settings(student.config)[0])
    export.save(tmp_path / "student.jax_export", exported, meta)
    restored, meta = export.load(tmp_path / "student.jax_export")
    rng = np.random.default_rng(0)
    for batch, frames in ((1, 7), (2, 12)):
        clip = rng.integers(0, 256, (batch, frames, 32, 32, 3), dtype=np.uint8)
        got, carry = restored.call(clip, export.zero_carry(meta, batch))
        want, want_carry = reference(student, clip)
        assert got.shape == (batch, frames, 2)
        np.testing.assert_allclose(got, want, atol=1e-5)
        np.testing.assert_allclose(carry, want_carry, atol=1e-5)
    # Two chunks with the carry passed on equal one pass.
    first, carry = restored.call(clip[:, :5], export.zero_carry(meta, 2))
    second, _ = restored.call(clip[:, 5:], carry)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), want, atol=1e-5)
    assert meta["face_settings"]["face_size"] == 32 and meta["missing_face"] == "retain"


def test_export_cli_and_bad_inputs(student, tmp_path):
    out = tmp_path / "cli" / "student.jax_export"
    done = subprocess.run(
        [sys.executable, "-m", "pkd_jax.export", f"--checkpoint={student.source}", f"--out={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "uint8[b,t,32,32,3]" in done.stdout
    restored, meta = export.load(out)
    assert meta["step"] == 3 and meta["carry"]["shapes"] == [["b", "32"]]
    clip = np.full((1, 3, 32, 32, 3), 128, np.uint8)
    np.testing.assert_allclose(
        restored.call(clip, export.zero_carry(meta, 1))[0], reference(student, clip)[0], atol=1e-5
    )
    (tmp_path / "junk.jax_export").write_bytes(b"not an export")
    (tmp_path / "junk.jax_export.json").write_text('{"format": "pkd_jax.export/1"}')
    with pytest.raises(ValueError, match=r"junk\.jax_export: not a serialized jax\.export function"):
        export.load(tmp_path / "junk.jax_export")
    with pytest.raises(FileNotFoundError, match=r"missing\.jax_export does not exist"):
        export.load(tmp_path / "missing.jax_export")
    teacher_dir = make_workdir(tmp_path / "teacher", recola_teacher.get_config("tiny"), None)
    with pytest.raises(ValueError, match="a teacher checkpoint; export serves students"):
        export.inference_function(inference.load_trained(teacher_dir))


# ---------------------------------------------------------------------------------------------------------
# Pretrained trunk weights: PyTorch files -> `python -m pkd_jax.weights import` -> config.pretrained.*

WIDTH = 0.0625  # the tiny configs' trunk widths


def run_import(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pkd_jax.weights", "import", *args],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def tiny_variables(config) -> dict:
    model = build.build_model(config)
    batch = {
        "frames": np.zeros((1, 1, 32, 32, 3), np.uint8),
        "audio": np.zeros((1, 1, 64, 100, 1), np.float32),
    }
    return build.init_variables(model, batch, seed=0)


def test_fer2013_vgg_checkpoint_imports_and_initialises_the_visual_trunk(tmp_path):
    torch.manual_seed(0)
    ref = randomize_batch_norm_(VGG19BNTorch(width=WIDTH, embed_dim=32), torch.rand(2, 3, 112, 112))
    state = {k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")}  # FER2013 has no fc
    state |= {"classifier.weight": torch.randn(7, 32), "classifier.bias": torch.randn(7)}
    torch.save({"net": state, "acc": 73.1, "epoch": 200}, tmp_path / "PrivateTest_model.t7")
    out = tmp_path / "vgg_init.npz"
    done = run_import(
        "--arch=vgg19_bn", f"--src={tmp_path / 'PrivateTest_model.t7'}", f"--out={out}", f"--width={WIDTH}"
    )
    assert done.returncode == 0, done.stderr
    assert "fc keeps its random init" in done.stdout

    config = recola_student.get_config("tiny").copy_and_resolve_references()
    config.unlock()
    config.pretrained.visual_cnn = str(out)
    fresh = tiny_variables(config)
    loaded = setup.load_pretrained(config, fresh)
    vgg = loaded["params"]["visual_cnn"]
    for index in (0, 3, 49):  # first, second and last conv: [O, I, kh, kw] -> [kh, kw, I, O]
        want = ref.features[index].weight.detach().numpy().transpose(2, 3, 1, 0)
        np.testing.assert_array_equal(vgg[f"features_{index}"]["kernel"], want)
    np.testing.assert_array_equal(
        loaded["batch_stats"]["visual_cnn"]["features_50"]["var"], ref.features[50].running_var.numpy()
    )
    np.testing.assert_array_equal(vgg["fc"]["kernel"], fresh["params"]["visual_cnn"]["fc"]["kernel"])
    assert jax.tree.structure(loaded) == jax.tree.structure(fresh)


def test_imagenet_resnet18_folds_rgb_conv1_into_the_spectrogram_trunk(tmp_path):
    torch.manual_seed(1)
    x = torch.rand(2, 1, 64, 100)
    ref = randomize_batch_norm_(
        ResNet18Torch(in_channels=3, width=WIDTH, num_classes=1000), x.repeat(1, 3, 1, 1)
    )
    ref.eval()
    torch.save(ref.state_dict(), tmp_path / "resnet18-f37072fd.pth")
    np.savez(tmp_path / "resnet18_torch_names.npz", **{k: v.numpy() for k, v in ref.state_dict().items()})
    out = tmp_path / "resnet18_init.npz"
    done = run_import(
        "--arch=resnet18", f"--src={tmp_path / 'resnet18-f37072fd.pth'}", f"--out={out}", f"--width={WIDTH}"
    )
    assert done.returncode == 0, done.stderr
    trees = [weights.load_npz(out)]
    trees.append(
        weights.import_trunk(
            "resnet18", tmp_path / "resnet18_torch_names.npz", tmp_path / "b.npz", width=WIDTH
        )
    )
    jax.tree.map(np.testing.assert_array_equal, trees[0], trees[1])  # both source formats agree
    assert trees[0]["params"]["conv1"]["kernel"].shape[2] == 1  # folded to one input channel
    # A one-channel spectrogram through the folded trunk = the RGB trunk on the channel repeated thrice.
    got = ResNet18(width=WIDTH).apply(trees[0], jnp.asarray(x.numpy().transpose(0, 2, 3, 1)), train=False)
    with torch.no_grad():
        want = ref.features(x.repeat(1, 3, 1, 1)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # And the teacher's config takes the converted file as its audio trunk's init.
    config = recola_teacher.get_config("tiny").copy_and_resolve_references()
    config.unlock()
    config.pretrained.audio_cnn = str(out)
    loaded = setup.load_pretrained(config, tiny_variables(config))
    jax.tree.map(np.testing.assert_array_equal, loaded["params"]["audio_cnn"], trees[0]["params"])


def test_import_lists_every_missing_and_mismatched_tensor_and_writes_nothing(tmp_path):
    torch.manual_seed(2)
    state = ResNet18Torch(in_channels=3, width=WIDTH).state_dict()
    del state["layer3.1.conv2.weight"]
    state["layer4.0.bn1.weight"] = torch.ones(7)
    torch.save(state, tmp_path / "broken.pth")
    out = tmp_path / "broken_init.npz"
    done = run_import(
        "--arch=resnet18", f"--src={tmp_path / 'broken.pth'}", f"--out={out}", f"--width={WIDTH}"
    )
    assert done.returncode == 1
    assert f"{tmp_path / 'broken.pth'} is not a resnet18 (width 0.0625) checkpoint" in done.stderr
    assert "missing params/layer3_1/conv2/kernel (3, 3, 16, 16)" in done.stderr
    assert "shape mismatch params/layer4_0/bn1/scale: model (32,), imported (7,)" in done.stderr
    assert not out.exists()
    wider = _vgg_npz(tmp_path, width=2 * WIDTH)  # a VGG of twice the channels
    with pytest.raises(
        ValueError,
        match=r"shape mismatch params/features_0/kernel: model \(3, 3, 3, 4\), imported \(3, 3, 3, 8\)",
    ):
        weights.import_trunk("vgg19_bn", wider, tmp_path / "x.npz", width=WIDTH)
    with pytest.raises(FileNotFoundError, match=r"nothing\.pth does not exist"):
        weights.import_trunk("vgg19_bn", tmp_path / "nothing.pth", out)


def _vgg_npz(folder: Path, width: float) -> Path:
    path = folder / f"vgg_{width}.npz"
    np.savez(path, **{k: v.numpy() for k, v in VGG19BNTorch(width=width).state_dict().items()})
    return path
