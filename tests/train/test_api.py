"""The Python API: a student trained with a loss of this file, resumed, loaded and run on the dev videos."""

import importlib
import json

import jax.numpy as jnp
import numpy as np
import pytest

from pkd_jax import api, defaults, losses
from pkd_jax.workdir.metric_writer import read_metrics

# Every clip distils (theta above any gamma); gamma is the window gate's batch["gate_gamma"].
_DISTIL = losses.compose(gate="paper", theta=10.0, gate_context="window")


def distil_and_bias(outputs, batch):
    """The composed PKD loss plus a small penalty on the mean prediction; reports no `loss` metric."""
    loss, metrics = _DISTIL(outputs, batch)
    bias = jnp.mean(outputs["pred"]) ** 2
    return loss + 0.01 * bias, {"bias": bias, "distilled_fraction": metrics["distilled_fraction"]}


def ccc_only(outputs, batch):
    """Plain CCC, no distillation."""
    loss = losses.ccc_loss(outputs["pred"], batch["labels"], batch.get("label_mask"))
    return loss, {"loss": loss}


# pytest imports this file as `test_api` (tests/train has no __init__.py); the losses are taken from its
# importable name, as a notebook importing them would record them.
LOSSES = importlib.import_module("tests.train.test_api")


def student_config(cache, teacher_dir, steps: int, *, locked: bool):
    config = defaults.get_config("student", "recola")
    defaults.tiny(config)
    config.data.cache = str(cache)
    config.data.eval_videos_per_batch = 2
    config.teacher.workdir = str(teacher_dir)
    config.train.num_steps = steps
    config.train.log_every = 1
    config.train.eval_every = 2
    config.train.checkpoint_every = 2
    config.eval.save_predictions = False
    if locked:
        config.lock()
    return config


def recorded_loss(workdir) -> str:
    return json.loads((workdir / "config.json").read_text())["loss"]["custom"]


def test_train_with_a_user_loss_resume_load_and_predict(tmp_path, cache, teacher_dir):
    workdir = tmp_path / "student"
    unlocked = student_config(cache, teacher_dir, 2, locked=False)
    result = api.train(unlocked, workdir, loss=LOSSES.distil_and_bias)
    assert np.isfinite(result["mean_ccc"])
    assert recorded_loss(workdir) == "tests.train.test_api:distil_and_bias"
    assert unlocked.loss.custom == ""  # the caller's config is not changed

    locked = student_config(cache, teacher_dir, 4, locked=True)
    refused = r"trained with the user loss 'tests\.train\.test_api:distil_and_bias'.*given no loss function"
    with pytest.raises(ValueError, match=refused):
        api.train(locked, workdir)
    with pytest.raises(ValueError, match=r"given the user loss 'tests\.train\.test_api:ccc_only'"):
        api.train(locked, workdir, loss=LOSSES.ccc_only)
    assert recorded_loss(workdir) == "tests.train.test_api:distil_and_bias"  # refused runs wrote nothing

    api.train(locked, workdir, loss=LOSSES.distil_and_bias)
    train = read_metrics(workdir, "train")
    assert [r["step"] for r in train] == [1, 2, 3, 4]  # resumed at step 3
    assert all(np.isfinite(r["loss"]) and "bias" in r and r["distilled_fraction"] == 1.0 for r in train)
    assert [r["step"] for r in read_metrics(workdir, "eval")] == [2, 4]

    trained = api.load(workdir, checkpoint=4)
    assert (trained.step, trained.config.stage, trained.config.loss.custom) == (
        4, "student", "tests.train.test_api:distil_and_bias",
    )  # fmt: skip
    assert api.load(workdir).step in (2, 4)  # the best by dev CCC
    dev = api.predict_dev(trained)
    assert sorted(dev) == ["dev_1", "dev_2"]
    for video in dev.values():
        assert video.pred.shape == video.labels.shape == (60, 2) and np.isfinite(video.pred).all()
        assert video.label_mask.all() and video.face_found.dtype == bool
        assert set(video.ccc()) == {"valence", "arousal"}
    with pytest.raises(ValueError, match="no 'test' videos"):
        api.predict_dev(trained, split="test")


def test_a_config_run_refuses_a_user_loss_on_resume_and_typos_in_unlocked_configs(tmp_path, cache):
    config = defaults.get_config("visual", "recola")
    defaults.tiny(config)
    config.optim.lr_hed = 1e-3
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['optim\.lr_hed'\]"):
        api.train(config, tmp_path / "typo")
    (tmp_path / "done" / "checkpoints" / "20").mkdir(parents=True)  # a finished checkpoint of a config run
    del config.optim["lr_hed"]
    config.data.cache = str(cache)
    (tmp_path / "done" / "config.json").write_text(config.to_json_best_effort())
    refused = r"trained with the config's own loss.*given the user loss 'tests\.train\.test_api:ccc_only'"
    with pytest.raises(ValueError, match=refused):
        api.train(config, tmp_path / "done", loss=LOSSES.ccc_only)
