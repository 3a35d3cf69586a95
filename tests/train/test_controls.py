"""The controls on a tiny on-disk cache, without training: which recordings a stage's clips come from,
the per-clip `labelled` flag, the gate's measure on labelled recordings, the shuffled teacher's track,
and the config errors."""

import json

import numpy as np
import pytest

from configs import recola_student, recola_visual
from pkd_jax.config import build
from pkd_jax.config.check import check_values, validate_teachers
from pkd_jax.data.cache import Cache
from pkd_jax.data.labelled import (
    labelled_flags,
    labelled_recordings,
    stream_recordings,
    unlabelled_recordings,
)
from pkd_jax.data.pipeline import train_dataset
from pkd_jax.precompute import gate_track
from pkd_jax.precompute.teacher_shuffle import derangement
from tests.fake_cache import write_fake_cache

LABELLED = ("train_1", "train_3")


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    return Cache(write_fake_cache(tmp_path_factory.mktemp("cache"), n_train=4, n_dev=1))


def config_of(module, cache, **data):
    config = module.get_config("tiny")
    config.data.cache = str(cache.root)
    for key, value in data.items():
        config.data[key] = value
    return config


def clips(config, cache, extra_arrays=None, batches=6):
    pipeline = build.pipeline_config(config, batch_size=4, with_audio=False, train=True)
    dataset = train_dataset(
        cache, pipeline, video_ids=stream_recordings(config, cache), extra_arrays=extra_arrays
    )
    return [dataset[i] for i in range(batches)]


def test_a_stage_without_a_teacher_draws_clips_from_the_labelled_recordings_only(small_cache):
    cache = small_cache
    config = config_of(recola_visual, cache, labelled_recordings=LABELLED)
    seen = {str(v) for batch in clips(config, cache) for v in batch["video_id"]}
    assert seen == set(LABELLED)
    everything = config_of(recola_visual, cache)
    assert stream_recordings(everything, cache) == cache.ids("train")


def test_a_student_gets_the_baselines_clips_plus_unlabelled_ones_and_flags_each_clip(small_cache):
    cache = small_cache
    config = config_of(recola_student, cache, labelled_recordings=("train_3", "train_1"))
    labelled = labelled_recordings(config, cache)
    assert labelled == LABELLED  # the cache's order
    assert unlabelled_recordings(config, cache) == (["train_2", "train_4"], config.data.batch_size)
    config.data.unlabelled_batch_size = 3
    others, extra = unlabelled_recordings(config, cache)
    pipeline = build.pipeline_config(config, batch_size=4, with_audio=False, train=True)
    dataset = train_dataset(
        cache, pipeline, video_ids=stream_recordings(config, cache), unlabelled_ids=others,
        unlabelled_batch_size=extra, extra_arrays=labelled_flags(cache, labelled),
    )  # fmt: skip
    baseline = clips(config_of(recola_visual, cache, labelled_recordings=LABELLED), cache, batches=8)
    for step, expected in enumerate(baseline):
        batch = dataset[step]
        assert len(batch["video_id"]) == 4 + 3
        # The first four are the baseline's own clips of this seed and step, frame for frame.
        np.testing.assert_array_equal(batch["video_id"][:4], expected["video_id"])
        np.testing.assert_array_equal(batch["frame_index"][:4], expected["frame_index"])
        assert {str(v) for v in batch["video_id"][4:]} <= {"train_2", "train_4"}
        np.testing.assert_array_equal(batch["labelled"], [1.0] * 4 + [0.0] * 3)
    seen = {str(v) for step in range(8) for v in dataset[step]["video_id"][4:]}
    assert seen == {"train_2", "train_4"}
    assert unlabelled_recordings(config_of(recola_visual, cache, labelled_recordings=LABELLED), cache) == (
        [],
        0,
    )


def test_labelled_recordings_errors_name_the_field_and_the_ids(small_cache):
    cache = small_cache
    config = config_of(recola_visual, cache, labelled_recordings=("train_1", "dev_1", "nope"))
    with pytest.raises(ValueError, match=r"labelled_recordings: \['dev_1', 'nope'\] are not training") as e:
        labelled_recordings(config, cache)
    assert "['train_1', 'train_2', 'train_3', 'train_4']" in str(e.value)
    for value, message in [
        (("train_1", "train_1"), r"names \['train_1'\] more than once"),
        (("train_1", ""), "non-empty recording id"),
        (("train_1", 3), r"non-empty recording id, not \[3\]"),
    ]:
        config.data.labelled_recordings = value
        with pytest.raises(ValueError, match=rf"config\.data\.labelled_recordings.*{message}"):
            check_values(config)


def test_teacher_shuffle_is_checked_and_needs_the_cached_teacher(small_cache):
    cache = small_cache
    config = config_of(recola_student, cache)
    config.teacher.workdir = "teacher"
    config.teacher.shuffle = "frames"
    with pytest.raises(ValueError, match=r"config\.teacher\.shuffle='frames': choose one of"):
        check_values(config)
    config.teacher.shuffle, config.teacher.mode = "time", "online"
    with pytest.raises(
        ValueError, match=r"teacher\.shuffle='time'.*needs teacher\.mode='cached', not 'online'"
    ):
        validate_teachers(config)


def fake_track(cache, seed=0):
    """A teacher track near the labels: every recording's [T, K] predictions."""
    rng = np.random.default_rng(seed)
    return {
        v: (cache.video(v).labels + rng.normal(0, 0.4, cache.video(v).labels.shape)).astype(np.float32)
        for v in cache.ids("train")
    }


def prepare(config, cache, workdir, track):
    return gate_track.prepare_gate(
        config, workdir, teacher=None, teacher_variables={}, cache=cache,
        teacher_cache={"teacher_track": track}, dtype=np.float32, chief=True,
    )  # fmt: skip


def test_the_gate_judges_the_teacher_on_labelled_recordings_and_opens_elsewhere(small_cache, tmp_path):
    cache = small_cache
    config = config_of(recola_student, cache, labelled_recordings=LABELLED)
    track = fake_track(cache)
    extra, theta, info = prepare(config, cache, tmp_path, track)
    span = config.data.clip_frames
    judged = gate_track.gammas_from_track(
        {v: track[v] for v in LABELLED}, cache, (0, 1), clip_frames=span, window_frames=250
    )
    labelled_gammas = np.concatenate([judged[v] for v in LABELLED])
    assert theta == pytest.approx(float(np.quantile(labelled_gammas, 0.75)))
    for v in ("train_2", "train_4"):
        np.testing.assert_array_equal(extra["gate_gamma"][v], np.zeros(60 - span + 1))
    every = np.concatenate(list(extra["gate_gamma"].values()))
    assert info["expected_distilled_share"] == pytest.approx(float(np.mean(every <= theta)))
    assert info["labelled_recordings"] == list(LABELLED)
    stored = np.load(tmp_path / "gate" / "gammas.npz")["gamma"]
    np.testing.assert_array_equal(np.sort(stored), np.sort(labelled_gammas))
    assert json.loads((tmp_path / "gate.json").read_text())["theta"] == theta


def test_the_gate_judges_a_shuffled_teacher_on_the_moved_track_and_stores_its_own(small_cache, tmp_path):
    cache = small_cache
    config = config_of(recola_student, cache)
    config.teacher.shuffle = "recording"
    track = fake_track(cache)
    extra, _, _ = prepare(config, cache, tmp_path, track)
    source = derangement(cache.ids("train"))
    for v in cache.ids("train"):
        moved = gate_track.gammas_from_track(
            {v: track[source[v]]}, cache, (0, 1), clip_frames=config.data.clip_frames, window_frames=250
        )
        np.testing.assert_array_equal(extra["gate_gamma"][v], moved[v])
    with np.load(tmp_path / "gate" / "track.npz") as stored:  # the teacher's own, reusable by any control
        np.testing.assert_array_equal(stored["train_1"], track["train_1"])


def test_a_student_of_labelled_recordings_from_a_shuffled_teacher_trains(tmp_path, cache, teacher_dir):
    """End to end, the two controls at once: a student with half its recordings unlabelled, distilled
    from a teacher whose outputs are another recording's (the teacher of the fixture saw every label)."""
    from pkd_jax.workdir.metric_writer import read_metrics
    from tests.train.test_train import run_main

    run_main(
        "student", tmp_path, cache, f"--config.teacher.workdir={teacher_dir}", "--config.train.num_steps=3",
        "--config.train.eval_every=3", "--config.data.labelled_recordings=('train_1',)",
        "--config.teacher.shuffle=recording",
    )  # fmt: skip
    losses = [r["loss"] for r in read_metrics(tmp_path, "train")]
    assert losses and all(np.isfinite(losses))
    gate = json.loads((tmp_path / "gate.json").read_text())
    assert gate["labelled_recordings"] == ["train_1"] and gate["expected_distilled_share"] > 0.5
    assert "1 of 3 training recordings labelled" in (tmp_path / "log.txt").read_text()


def test_the_paper_runner_passes_both_controls_to_every_stage(tmp_path):
    from pkd_jax import defaults
    from pkd_jax.experiments.runner import method_config

    base = defaults.get_config("student", "synthetic")
    base.experiment = defaults.experiment_fields()
    base.data.labelled_recordings, base.teacher.shuffle = ("train_1", "train_2"), "time"
    for method in ("teacher", "visual", "student", "student_nogate"):
        config = method_config(base, method, 0, tmp_path)
        assert config.data.labelled_recordings == ("train_1", "train_2"), method
        assert config.teacher.shuffle == "time", method
