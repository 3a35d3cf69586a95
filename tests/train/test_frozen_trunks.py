"""Frozen trunks: cached features equal the trunk run online, the trunk never moves, and a changed trunk,
corpus or stored file is noticed."""

import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from pkd_jax import defaults
from pkd_jax.config import build
from pkd_jax.config.check import validate_config
from pkd_jax.data.cache import Cache
from pkd_jax.data.pipeline import train_dataset
from pkd_jax.models.inputs import model_inputs
from pkd_jax.precompute import frozen_bn, trunk_features
from pkd_jax.workdir.trained import load_trained
from tests.train.test_train import run_main, train_losses

FREEZE = "--config.model.freeze_visual_cnn=True"


def _config(stage: str, cache: Path, *, strong: bool = False, **model):
    c = defaults.affwild2(defaults.get_config(stage, "affwild2")) if strong else defaults.get_config(stage)
    (defaults.tiny_affwild2 if strong else defaults.tiny)(c)
    c.data.cache = str(cache)
    for key, value in model.items():
        c.model[key] = value
    return c


def test_training_on_cached_features_equals_the_frozen_trunk_online(tmp_path, cache):
    run_main("visual", tmp_path / "cached", cache, FREEZE)
    run_main("visual", tmp_path / "online", cache, FREEZE, "--config.model.frozen_features=online")
    cached, online = train_losses(tmp_path / "cached"), train_losses(tmp_path / "online")
    np.testing.assert_allclose(cached, online, rtol=1e-5)
    # The cached run also evaluates on the stored features (only the recurrent layer and head run), the
    # online one on the pixels: the same scores, to the rounding training itself accumulates.
    scores = [
        json.loads((tmp_path / run / "eval.json").read_text())["raw"]["per_video"]
        for run in ("cached", "online")
    ]
    assert scores[0].keys() == scores[1].keys()
    for video, targets in scores[0].items():
        for target, value in targets.items():
            assert value == pytest.approx(scores[1][video][target], abs=2e-3), (video, target)
    # Training moved the recurrent layer and the head but left the trunk (and its BN statistics) as it was
    # initialised: the digest of the checkpoint's trunk names the stored features' directory.
    run = load_trained(tmp_path / "cached")
    cached_vars, online_vars = run.variables, load_trained(tmp_path / "online").variables
    for group in ("temporal", "head"):
        for a, b in zip(
            jax.tree.leaves(cached_vars["params"][group]),
            jax.tree.leaves(online_vars["params"][group]),
            strict=True,
        ):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)  # Adam amplifies rounding a little
    digest = trunk_features.weights_digest(cached_vars, "visual_cnn")
    stored = [
        json.loads(p.read_text()) for p in (cache / "trunk_features").glob("visual_cnn-*/manifest.json")
    ]
    assert digest in [m["weights_digest"] for m in stored]
    init = build.init_variables(run.model, {"frames": np.zeros((1, 1, 32, 32, 3), np.uint8)}, run.config.seed)
    assert trunk_features.weights_digest(init, "visual_cnn") != digest  # its BN statistics were calibrated
    calibrated = frozen_bn.calibrate_untrained(run.config, run.model, init, Cache(cache))
    assert trunk_features.weights_digest(calibrated, "visual_cnn") == digest
    assert trunk_features.weights_digest(init, "temporal") != trunk_features.weights_digest(
        cached_vars, "temporal"
    )


def test_batch_features_are_the_trunk_on_the_batch_inputs(tmp_path):
    # Windows (the strong setting): each sub-sequence's clip and audio window, indexed by its first frame.
    # Clips (the weak setting): test_training_on_cached_features_equals_the_frozen_trunk_online.
    from tests.fake_cache import write_fake_cache

    cache_dir = write_fake_cache(tmp_path / "cache", frames=40)
    config = _config("teacher", cache_dir, strong=True, freeze_visual_cnn=True, freeze_audio_cnn=True)
    cache = Cache(cache_dir)
    model = build.build_teacher(config)
    pipeline = build.pipeline_config(config, batch_size=3, with_audio=True, train=True)
    example = train_dataset(cache, pipeline)[0]
    variables = build.init_variables(model, example, 0)
    arrays, digests = trunk_features.frozen_feature_arrays(config, model, variables, cache)
    assert set(arrays) == {"visual_features", "audio_features"}
    assert set(digests) == {"visual_cnn", "audio_cnn"}
    batch = train_dataset(cache, pipeline, frame_arrays=arrays)[1]  # frames and audio and their features
    frames, audio, _ = model_inputs(model, batch, np.float32)

    def online_and_from_features(v, frames, audio, visual_features, audio_features):  # one program
        return (
            model.apply(v, frames, method="trunk_visual"),
            model.apply(v, audio, method="trunk_audio"),
            model.apply(v, frames, audio),
            model.apply(v, None, None, visual_features=visual_features, audio_features=audio_features),
        )

    visual, sound, full, from_features = jax.jit(online_and_from_features)(
        variables, frames, audio, batch["visual_features"], batch["audio_features"]
    )
    np.testing.assert_allclose(batch["visual_features"], visual, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(batch["audio_features"], sound, rtol=1e-4, atol=1e-5)
    # The whole model on the features equals the model on the inputs.
    for a, b in zip(full, from_features, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_a_teachers_cached_outputs_from_its_trunks_features_equal_those_from_its_inputs(tmp_path):
    from pkd_jax.precompute.teacher_cache import compute_teacher_cache
    from tests.fake_cache import write_fake_cache

    cache_dir = write_fake_cache(tmp_path / "cache", frames=30)
    config = _config("teacher", cache_dir, freeze_visual_cnn=True, freeze_audio_cnn=True)
    cache = Cache(cache_dir)
    model = build.build_teacher(config)
    pipeline = build.pipeline_config(config, batch_size=2, with_audio=True, train=True)
    variables = build.init_variables(model, train_dataset(cache, pipeline)[0], 0)
    arrays, _ = trunk_features.frozen_feature_arrays(config, model, variables, cache)
    settings = {"clip_frames": 4, "missing_face": "retain", "audio_window_s": 1.0, "with_track": True}
    from_inputs = compute_teacher_cache(model, variables, cache, **settings)
    from_features = compute_teacher_cache(model, variables, cache, trunk_features=arrays, **settings)
    for name, per_video in from_inputs.items():
        for video, value in per_video.items():
            np.testing.assert_allclose(from_features[name][video], value, rtol=1e-4, atol=1e-5)


def test_a_changed_trunk_or_corpus_is_detected(tmp_path, caplog):
    from tests.fake_cache import write_fake_cache

    cache_dir = write_fake_cache(tmp_path / "cache", frames=30)
    config = _config("visual", cache_dir, freeze_visual_cnn=True)
    cache = Cache(cache_dir)
    model = build.build_student(config)
    example = {"frames": np.zeros((1, 1, 32, 32, 3), np.uint8)}
    first = build.init_variables(model, example, 0)
    features, digest = trunk_features.load_or_compute(config, model, first, cache, "visual_cnn")
    directory = next((cache_dir / "trunk_features").iterdir())

    # Other weights (another seed) are another trunk: other features in another directory.
    other = build.init_variables(model, example, 1)
    other_features, other_digest = trunk_features.load_or_compute(config, model, other, cache, "visual_cnn")
    assert other_digest != digest and len(list((cache_dir / "trunk_features").iterdir())) == 2
    assert not np.allclose(other_features["train_1"], features["train_1"])

    # A checkpoint whose trunk is not the one the features came from stops the run.
    trunk_features.check_restored_trunks({"visual_cnn": digest}, first, tmp_path)
    with pytest.raises(trunk_features.TrunkFeatureError, match="frozen visual_cnn differs"):
        trunk_features.check_restored_trunks({"visual_cnn": digest}, other, tmp_path)

    # A re-preprocessed video makes the stored features stale: recomputed from the new frames, loudly.
    frames_file = cache_dir / "videos" / "train_1" / "frames.npy"
    new_frames = np.load(frames_file)[::-1].copy()
    np.save(frames_file, new_frames)
    os.utime(frames_file, ns=(1, 1))
    caplog.set_level("WARNING")
    fresh, _ = trunk_features.load_or_compute(config, model, first, Cache(cache_dir), "visual_cnn")
    assert "another state of the feature cache" in caplog.text
    assert not np.allclose(fresh["train_1"], features["train_1"])
    np.testing.assert_allclose(fresh["train_2"], features["train_2"], rtol=1e-6)

    # A manifest that contradicts its directory's key, or a damaged array, is an error naming the file.
    manifest = json.loads((directory / "manifest.json").read_text())
    (directory / "manifest.json").write_text(json.dumps({**manifest, "weights_digest": "0" * 64}))
    with pytest.raises(trunk_features.TrunkFeatureError, match=r"manifest\.json"):
        trunk_features.load_or_compute(config, model, first, Cache(cache_dir), "visual_cnn")
    (directory / "manifest.json").write_text(json.dumps(manifest))
    (directory / "train_2.npy").write_bytes(b"not an array")
    with pytest.raises(trunk_features.TrunkFeatureError, match=r"train_2\.npy"):
        trunk_features.load_or_compute(config, model, first, Cache(cache_dir), "visual_cnn")


def test_frozen_groups_never_move_and_augmentation_needs_the_online_trunk(cache):
    config = _config("visual", cache, freeze_visual_cnn=True)
    config.data.augment = True
    with pytest.raises(ValueError, match="augment"):
        validate_config(config)
    config.model.frozen_features = "online"
    validate_config(config)
    config.model.frozen_features = "cachd"
    with pytest.raises(ValueError, match="frozen_features"):
        validate_config(config)
    # The optimizer leaves a frozen group at its value even under weight decay.
    from pkd_jax.train.state import make_optimizer

    config.optim.weight_decay = 0.1
    params = {"visual_cnn": {"w": np.ones(3, np.float32)}, "head": {"w": np.ones(3, np.float32)}}
    tx = make_optimizer(config.optim, params, frozen_groups=("visual_cnn",))
    grads = jax.tree.map(np.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert np.all(updates["visual_cnn"]["w"] == 0) and np.all(updates["head"]["w"] != 0)
    assert build.frozen_trunks(_config("student", cache, freeze_audio_cnn=True)) == ()


def test_untrained_batchnorm_of_a_frozen_trunk_is_calibrated_on_training_inputs(tmp_path):
    from tests.fake_cache import write_fake_cache

    cache_dir = write_fake_cache(tmp_path / "cache", frames=30)
    config = _config("visual", cache_dir, freeze_visual_cnn=True, frozen_bn_calibration_frames=40)
    cache, model = Cache(cache_dir), build.build_student(config)
    variables = build.init_variables(model, {"frames": np.zeros((1, 1, 32, 32, 3), np.uint8)}, 0)
    assert frozen_bn.has_untrained_statistics(variables, "visual_cnn")
    picks = frozen_bn.calibration_index([30, 30, 30], 40)
    assert sum(len(i) for _, i in picks) == 40 and [v for v, _ in picks] == [0, 1, 2]

    # Three batches (16, 16, 8): the first BatchNorm's statistics are those of the first convolution's
    # output over all 40 inputs (its input does not depend on any normalisation).
    calibrated = frozen_bn.calibrate_group(config, model, variables, cache, "visual_cnn", count=40, batch=16)
    reader = trunk_features.trunk_reader(config, cache, "visual_cnn")
    ids = cache.ids("train")
    inputs = np.concatenate([trunk_features.trunk_inputs(reader, ids[v], i, "visual_cnn") for v, i in picks])
    _, captured = model.apply(
        variables, inputs / 255.0, method=lambda m, x: m.visual_cnn(x, train=False),
        capture_intermediates=True, mutable=["intermediates"],
    )  # fmt: skip
    conv0 = np.asarray(captured["intermediates"]["visual_cnn"]["features_0"]["__call__"][0], np.float64)
    first_bn = calibrated["batch_stats"]["visual_cnn"]["features_1"]
    np.testing.assert_allclose(first_bn["mean"], conv0.mean((0, 1, 2)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(first_bn["var"], conv0.var((0, 1, 2)), rtol=1e-3, atol=1e-6)
    assert not frozen_bn.has_untrained_statistics(calibrated, "visual_cnn")
    for a, b in zip(jax.tree.leaves(variables["params"]), jax.tree.leaves(calibrated["params"]), strict=True):
        np.testing.assert_array_equal(a, b)  # the weights are untouched

    # Calibrated, the frozen trunk's features vary over a video; with the initial statistics they vanish.
    frames = inputs[None] / 255.0
    spread = [
        float(np.std(model.apply(v, frames, method="trunk_visual"), axis=1).mean())
        for v in (variables, calibrated)
    ]
    assert spread[1] > 100 * spread[0]

    # Statistics that are not the initial ones (pretrained) are kept, and so is everything with 0 frames.
    assert frozen_bn.calibrate_untrained(config, model, calibrated, cache) is calibrated
    config.model.frozen_bn_calibration_frames = 0
    assert frozen_bn.calibrate_untrained(config, model, variables, cache) is variables
