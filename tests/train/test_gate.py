"""The gate in training: window context in both teacher modes, the stored track, theta quantiles, pairing."""

import json

import numpy as np
import pytest

from pkd_jax.precompute import gate_track
from pkd_jax.workdir.metric_writer import read_metrics
from tests.train.test_train import STEPS, run_main

WINDOW = ["--config.loss.gate_context=window", "--config.loss.gate_window_frames=25"]


def test_window_gate_and_losses_same_in_both_modes_and_track_computed_once(
    tmp_path, cache, teacher_dir, monkeypatch
):
    calls = []
    real = gate_track.teacher_track
    monkeypatch.setattr(gate_track, "teacher_track", lambda *a, **k: calls.append(1) or real(*a, **k))
    theta = ["--config.loss.theta_quantile=0.5"]  # half the clips distil, whatever the teacher's quality
    teacher = f"--config.teacher.workdir={teacher_dir}"
    online = "--config.teacher.mode=online"  # the cached mode's track comes with its teacher cache
    run_main("student", tmp_path / "cached", cache, teacher, *WINDOW, *theta)
    assert not calls
    # Online: stopped at step 3 and resumed; the stored track is computed once and reused.
    run_main(
        "student", tmp_path / "online", cache, teacher, online, *WINDOW, *theta, "--config.train.num_steps=3"
    )
    assert (tmp_path / "online" / "gate" / "track.npz").is_file() and len(calls) == 1
    run_main("student", tmp_path / "online", cache, teacher, online, *WINDOW, *theta)
    assert len(calls) == 1
    cached, online_metrics = (
        read_metrics(tmp_path / "cached", "train"),
        read_metrics(tmp_path / "online", "train"),
    )
    assert [r["step"] for r in online_metrics] == [r["step"] for r in cached] == [3, STEPS]
    for a, b in zip(cached, online_metrics, strict=True):
        # gamma comes from the same track and the same clips: identical decisions, exactly.
        for key in ("distilled_fraction", "teacher_gamma", "gamma_q10", "gamma_q50", "gamma_q90"):
            assert a[key] == b[key], key
        # The cached teacher's outputs are the online teacher's: the same losses. Float rounding differs
        # (trunks batched per chunk vs per clip); training only amplifies it slowly.
        for key in ("loss", "distill_loss", "ccc_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-2), key
    assert (tmp_path / "online" / "eval.json").is_file()
    info = json.loads((tmp_path / "cached" / "gate.json").read_text())
    assert info["context"] == "window" and info["window_frames"] == 25 and info["theta_quantile"] == 0.5
    gammas = np.load(tmp_path / "cached" / "gate" / "gammas.npz")["gamma"]
    assert info["theta"] == pytest.approx(float(np.quantile(gammas, 0.5)))
    assert info["expected_distilled_share"] == pytest.approx(0.5, abs=0.05)
    assert 0.0 < np.mean([r["distilled_fraction"] for r in cached]) < 1.0
    assert json.loads((tmp_path / "online" / "gate.json").read_text()) == info


def test_a_stored_track_of_another_teacher_is_recomputed(tmp_path):
    computed = []
    track = {"train_1": np.ones((5, 2), np.float32)}
    compute = lambda: computed.append(1) or track
    gate_track.load_or_compute_track(tmp_path, "teacher A", compute)
    again = gate_track.load_or_compute_track(tmp_path, "teacher A", compute)
    np.testing.assert_array_equal(again["train_1"], track["train_1"])
    assert len(computed) == 1
    gate_track.load_or_compute_track(tmp_path, "teacher B", compute)
    assert len(computed) == 2


def test_the_stored_track_is_keyed_by_the_teachers_parameters_not_its_path(tmp_path, cache, teacher_dir):
    """A moved teacher workdir keeps the stored track; a teacher retrained in place does not."""
    import shutil

    import jax

    from configs import recola_student
    from pkd_jax.data.cache import Cache
    from pkd_jax.train import sharding
    from pkd_jax.workdir.trained import load_teacher

    config = recola_student.get_config("tiny")
    moved = tmp_path / "moved"
    shutil.copytree(teacher_dir, moved)
    keys = []
    for workdir in (teacher_dir, moved):
        config.teacher.workdir = str(workdir)
        _, variables, _ = load_teacher(config, sharding.make_mesh())
        keys.append(gate_track.fingerprint(config, sharding.local_view(variables), Cache(cache)))
    assert keys[0] == keys[1]
    retrained = jax.tree.map(lambda v: v * 1.001, sharding.local_view(variables))
    assert gate_track.fingerprint(config, retrained, Cache(cache)) != keys[0]


def test_cached_teachers_track_equals_the_streamed_track(cache, teacher_dir):
    from configs import recola_student
    from pkd_jax.data.cache import Cache
    from pkd_jax.precompute.teacher_cache import compute_teacher_cache
    from pkd_jax.train import sharding
    from pkd_jax.workdir.trained import load_teacher

    config = recola_student.get_config("tiny")
    config.teacher.workdir = str(teacher_dir)
    config.data.eval_videos_per_batch = 2
    teacher, variables, _ = load_teacher(config, sharding.make_mesh())
    opened = Cache(cache)
    streamed = gate_track.teacher_track(teacher, variables, opened, config)
    cached = compute_teacher_cache(
        teacher, variables, opened, clip_frames=config.data.clip_frames, missing_face="retain",
        audio_window_s=config.data.audio_window_s, with_track=True,
    )["teacher_track"]  # fmt: skip
    assert set(cached) == set(streamed) == set(opened.ids("train"))
    for video_id, track in streamed.items():
        np.testing.assert_allclose(cached[video_id], track, atol=1e-4)


def test_gate_settings_that_cannot_work_are_clear_errors(tmp_path, cache, teacher_dir):
    teacher = f"--config.teacher.workdir={teacher_dir}"
    with pytest.raises(ValueError, match="gate_context"):
        run_main("student", tmp_path / "a", cache, teacher, "--config.loss.gate_context=video")
    with pytest.raises(ValueError, match="theta_quantile"):
        run_main(
            "student", tmp_path / "b", cache, teacher, "--config.loss.gate_context=batch",
            "--config.loss.theta_quantile=0.5",
        )  # fmt: skip


def test_baseline_and_student_of_a_seed_share_init_and_clip_stream(cache, teacher_dir):
    """The paired design: the student-minus-baseline difference of one seed removes init and data noise."""
    import jax

    from configs import recola_student, recola_visual
    from pkd_jax.config import build
    from pkd_jax.data.cache import Cache
    from pkd_jax.data.pipeline import PipelineConfig, train_dataset

    opened = Cache(cache)
    firsts, params = [], []
    for module in (recola_visual, recola_student):
        config = module.get_config("tiny")
        pipeline = PipelineConfig(
            clip_frames=config.data.clip_frames, batch_size=config.data.batch_size, seed=config.seed,
            with_audio=False,
        )  # fmt: skip
        batch = train_dataset(opened, pipeline)[0]
        firsts.append(batch)
        params.append(build.init_variables(build.build_model(config), batch, config.seed)["params"])
    np.testing.assert_array_equal(firsts[0]["frames"], firsts[1]["frames"])
    assert list(firsts[0]["video_id"]) == list(firsts[1]["video_id"])
    jax.tree.map(np.testing.assert_array_equal, params[0], params[1])
