"""Beyond the paper, through `main` on the tiny training cache (which has physiological features):
teachers of other modality sets, a student of two teachers, and one-stage distillation that resumes
exactly."""

import json

import numpy as np
import pytest

from pkd_jax.workdir.metric_writer import read_metrics
from tests.fake_cache import write_fake_cache
from tests.train.test_train import STEPS, run_main, train_losses

PV = "--config.model.teacher_modalities=('physio','visual')"
APV = "--config.model.teacher_modalities=('audio','visual','physio')"


@pytest.fixture(scope="module")
def pv_teacher(tmp_path_factory, cache):
    workdir = tmp_path_factory.mktemp("pv_teacher")
    run_main("teacher", workdir, cache, PV)
    return workdir


def _params(workdir):
    from pkd_jax.workdir.trained import load_trained

    return load_trained(workdir).variables["params"]


def test_physio_visual_and_three_modality_teachers_train_through_main(tmp_path, cache, pv_teacher):
    run_main("teacher", tmp_path / "apv", cache, APV)
    pv, apv = _params(pv_teacher), _params(tmp_path / "apv")
    assert "physio_cnn" in pv and "audio_cnn" not in pv
    assert {"physio_cnn", "audio_cnn", "visual_cnn"} <= set(apv)
    # The fused layer reads the projected visual features, then audio (512 x width), then physio.
    tiny_visual, tiny_physio = 32, 16
    assert pv["head"]["fused_0"]["kernel"].shape[0] == tiny_visual + tiny_physio
    assert apv["head"]["fused_0"]["kernel"].shape[0] == tiny_visual + 32 + tiny_physio
    for workdir in (pv_teacher, tmp_path / "apv"):
        result = json.loads((workdir / "eval.json").read_text())
        assert np.isfinite(result["mean_ccc"])
        assert all(np.isfinite(train_losses(workdir)))


def test_a_physio_teacher_on_a_cache_without_physio_is_a_clear_error(tmp_path):
    plain = write_fake_cache(tmp_path / "cache", n_train=1, n_dev=1, frames=20)
    with pytest.raises(ValueError, match=r"manifest\.json: this cache has no physiological recordings"):
        run_main("teacher", tmp_path / "pv", plain, PV)


def test_a_student_distils_from_two_teachers_each_with_its_own_gate(tmp_path, cache, teacher_dir, pv_teacher):
    av = teacher_dir  # audio + visual
    student = tmp_path / "student"
    run_main(
        "student", student, cache, f"--config.teacher.workdirs=('{av}','{pv_teacher}')",
        "--config.loss.gate_context=window", "--config.loss.gate_window_frames=20",
    )  # fmt: skip
    metrics = read_metrics(student, "train")
    for k in (0, 1):
        gate = json.loads((student / f"gate_{k}.json").read_text())
        assert gate["context"] == "window" and 0.0 < gate["expected_distilled_share"] <= 1.0
        assert all(0.0 <= m[f"distilled_fraction_{k}"] <= 1.0 for m in metrics)
        assert all(np.isfinite(m[f"teacher_gamma_{k}"]) for m in metrics)
    assert not (student / "gate.json").exists()
    assert json.loads((student / "eval.json").read_text())["mean_ccc"] is not None
    # The combining rules themselves are checked term by term in tests/test_losses.py.


def test_one_stage_trains_both_in_one_checkpoint_and_resumes_exactly(tmp_path, cache):
    args = (PV, "--config.teacher.mode=joint", "--config.teacher.warmup_steps=2", "--config.loss.gate=none")
    run_main("student", tmp_path / "full", cache, *args, "--config.train.log_every=1")
    metrics = read_metrics(tmp_path / "full", "train")
    assert [m["student_on"] for m in metrics] == [0.0, 0.0] + [1.0] * (STEPS - 2)
    assert all(m["loss"] == pytest.approx(m["teacher_loss"]) for m in metrics[:2])
    # Interrupted after the step-3 checkpoint, then the same command again.
    run_main("student", tmp_path / "resumed", cache, *args, "--config.train.log_every=1",
             "--config.train.num_steps=3")  # fmt: skip
    run_main("student", tmp_path / "resumed", cache, *args, "--config.train.log_every=1")
    assert train_losses(tmp_path / "resumed") == train_losses(tmp_path / "full")
    # One checkpoint holds both networks; the trained workdir is used through its student.
    from pkd_jax.models import Student
    from pkd_jax.train import sharding
    from pkd_jax.workdir.checkpoints import Checkpointer

    checkpointer = Checkpointer(tmp_path / "full" / "checkpoints", async_save=False)
    tree = checkpointer.restore_tree(STEPS, sharding.replicated(sharding.make_mesh()))
    checkpointer.close()
    assert set(tree["params"]) == {"teacher", "student"} and "physio_cnn" in tree["params"]["teacher"]
    from pkd_jax.workdir.trained import load_trained

    trained = load_trained(tmp_path / "full")
    assert isinstance(trained.model, Student) and "visual_cnn" in trained.variables["params"]
    np.testing.assert_array_equal(
        trained.variables["params"]["head"]["out"]["kernel"],
        tree["params"]["student"]["head"]["out"]["kernel"],
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("--config.teacher.mode=joint", "--config.teacher.workdir=/t"), "trains its own teacher"),
        (("--config.teacher.mode=joint",), "no gamma over the training clips"),
        (("--config.teacher.workdirs=('/a','/b')", "--config.teacher.workdir=/t"), "not both"),
        (("--config.teacher.workdir=/t", "--config.teacher.warmup_steps=3"), "teacher.mode='joint'"),
        (("--config.model.teacher_modalities=('audio','physio')",), "fuses the visual stream"),
        (("--config.model.teacher_modalities=('audio','sound')",), "each once"),
    ],
)
def test_extension_settings_that_cannot_work_are_clear_errors(tmp_path, cache, overrides, message):
    with pytest.raises(ValueError, match=message):
        run_main("student", tmp_path / "w", cache, *overrides)
