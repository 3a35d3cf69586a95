"""Trunks pretrained on the separate face set: the pretraining configs, the exported weights files that
`config.pretrained` loads, and the experiment config that freezes them in every method."""

from pathlib import Path

import jax
import numpy as np
import pytest

from configs import demo
from pkd_jax import api, weights
from pkd_jax.data import synthetic
from pkd_jax.experiments import pretrain, runner


def test_the_face_set_labels_the_expression_in_the_frame_and_trains_single_frames(tmp_path):
    generator = pretrain.face_set_config(synthetic.SyntheticConfig())
    assert (generator.annotator_lag_s, generator.annotator_noise_sd, generator.physio) == (0.0, 0.0, False)
    config = demo.get_config("controls")  # labels on 3 of the corpus's training recordings
    visual = pretrain.trunk_config(config, tmp_path, "visual_cnn")
    audio = pretrain.trunk_config(config, tmp_path, "audio_cnn", tmp_path / "visual_cnn.npz")
    assert (visual.stage, audio.stage) == ("visual", "teacher")
    for c in (visual, audio):
        assert c.data.clip_frames == 1 and c.seed == config.experiment.pretrain.seed
        assert c.data.labelled_recordings == ()  # the face set is all labelled, whatever the corpus is
        assert c.data.root == str(tmp_path / "corpus") and "experiment" not in c
        assert c.optim.schedule == "warmup_cosine" and c.train.num_steps == config.experiment.pretrain.steps
    # The audio trunk learns next to the pretrained visual trunk, frozen; the visual trunk itself trains.
    assert not visual.model.freeze_visual_cnn and not visual.pretrained.visual_cnn
    assert audio.model.freeze_visual_cnn and audio.pretrained.visual_cnn == str(tmp_path / "visual_cnn.npz")
    assert not audio.model.freeze_audio_cnn


def test_a_face_set_with_the_corpus_seed_is_refused(tmp_path):
    config = demo.get_config()
    config.unlock()
    config.experiment.pretrain.seed = config.experiment.corpus_seed
    with pytest.raises(ValueError, match=r"pretrain\.seed"):
        pretrain.pretrain_trunks(config, tmp_path)


def test_exported_trunks_load_as_the_trained_ones(tmp_path, teacher_dir):
    from pkd_jax.train.setup import load_pretrained

    trained = api.load(teacher_dir, checkpoint=pretrain._last_step(teacher_dir))
    for group in ("visual_cnn", "audio_cnn"):
        pretrain.write_trunk(teacher_dir, group, tmp_path / f"{group}.npz")
    config = trained.config.copy_and_resolve_references()
    config.unlock()
    config.pretrained.visual_cnn = str(tmp_path / "visual_cnn.npz")
    config.pretrained.audio_cnn = str(tmp_path / "audio_cnn.npz")
    fresh = jax.tree.map(np.zeros_like, trained.variables)  # shapes of the network, other values
    loaded = load_pretrained(config, fresh)
    for collection in ("params", "batch_stats"):
        for group in ("visual_cnn", "audio_cnn"):
            if group in trained.variables[collection]:
                jax.tree.map(
                    np.testing.assert_array_equal,
                    loaded[collection][group],
                    trained.variables[collection][group],
                )
    assert weights.load_trunk(tmp_path / "visual_cnn.npz", "vgg19_bn")["params"]


def test_the_experiment_freezes_the_pretrained_trunks_and_only_a_teacher_gets_the_audio_one(
    tmp_path, monkeypatch
):
    files = {g: tmp_path / f"{g}.npz" for g in ("visual_cnn", "audio_cnn")}
    monkeypatch.setattr(pretrain, "pretrain_trunks", lambda config, workdir: files)
    config = runner.with_pretrained_trunks(demo.get_config(), tmp_path)
    assert config.model.freeze_visual_cnn and config.model.freeze_audio_cnn
    assert config.model.frozen_features == "cached"
    teacher = runner.method_config(config, "teacher", 0, tmp_path)
    visual = runner.method_config(config, "visual", 0, tmp_path)
    assert teacher.pretrained.audio_cnn == str(files["audio_cnn"]) and teacher.model.freeze_audio_cnn
    assert visual.pretrained.visual_cnn == str(files["visual_cnn"]) and visual.model.freeze_visual_cnn
    assert not visual.pretrained.audio_cnn and not visual.model.freeze_audio_cnn
    assert Path(teacher.pretrained.visual_cnn) == files["visual_cnn"]
