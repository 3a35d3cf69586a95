"""Populations (`train.population`): members follow their single runs, pair across methods, resume
exactly after a crash between member saves, and leave workdirs that load, predict and export."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pkd_jax import api
from pkd_jax.train import loop, population
from pkd_jax.workdir.metric_writer import read_metrics
from tests.train.test_train import STEPS, run_main

# Member s and the single run of seed s compute the same function, but not the same float32 operations
# (on CPU a member's convolutions are im2col products, `pkd_jax.models.conv.per_member_kernels`): the
# losses agree to rounding over the first steps, then Adam, which scales every gradient entry to about
# the learning rate however small it is, lets the rounding of near-zero entries grow (as between one
# device and four, tests/train/test_train.py).
RTOL_FIRST, FIRST = 1e-5, 4
RTOL_ALL = 2e-3
ARGS = ("--config.train.log_every=1", "--config.eval.save_predictions=False")


def losses(workdir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(workdir, "train")]


@pytest.fixture(scope="module")
def visual_population(tmp_path_factory, cache):
    """A population of the visual baseline, seeds 3 and 4, and the single run of seed 4."""
    root = tmp_path_factory.mktemp("population")
    run_main("visual", root / "pop", cache, "--config.train.population=2", "--config.seed=3", *ARGS)
    run_main("visual", root / "single", cache, "--config.seed=4", *ARGS)
    return root


def test_members_follow_their_single_runs_step_by_step(visual_population):
    pop, single = visual_population / "pop", visual_population / "single"
    record = json.loads((pop / "population.json").read_text())
    assert record["seeds"] == [3, 4] and record["stage"] == "visual"
    member = pop / "seed_4"
    assert json.loads((member / "config.json").read_text())["seed"] == 4
    assert len(losses(member)) == STEPS
    np.testing.assert_allclose(losses(member)[:FIRST], losses(single)[:FIRST], rtol=RTOL_FIRST)
    np.testing.assert_allclose(losses(member), losses(single), rtol=RTOL_ALL)
    assert losses(pop / "seed_3")[0] != pytest.approx(losses(member)[0], rel=1e-3)  # its own seed
    member_eval = json.loads((member / "eval.json").read_text())["raw"]["mean_over_videos"]
    single_eval = json.loads((single / "eval.json").read_text())["raw"]["mean_over_videos"]
    for target, value in single_eval.items():
        assert member_eval[target] == pytest.approx(value, abs=5e-4)  # near-zero CCC: rounding shows


def test_member_s_of_every_method_has_the_same_start_and_clip_stream(tmp_path, cache, teacher_dir):
    from configs import recola_student, recola_visual

    def configs(module, **teacher):
        out = []
        for seed in (0, 1):
            c = module.get_config("tiny")
            c.unlock()
            c.seed, c.data.cache, c.data.eval_videos_per_batch = seed, str(cache), 2
            c.teacher.update(teacher)
            c.lock()
            out.append(c)
        return out

    def start(name, module, **teacher):
        dirs = [tmp_path / name / f"seed_{s}" for s in (0, 1)]
        for d in dirs:
            d.mkdir(parents=True)
        run = population.setup_population(configs(module, **teacher), dirs, tmp_path / name)
        batch = next(run.batches)
        run.checkpointer.close()
        run.writer.close()
        return run, batch

    visual, visual_batch = start("visual", recola_visual)
    student, student_batch = start("student", recola_student, workdir=str(teacher_dir))
    for m in (0, 1):
        np.testing.assert_array_equal(
            population.member(visual.state.params, m)["visual_cnn"]["fc"]["kernel"],
            population.member(student.state.params, m)["visual_cnn"]["fc"]["kernel"],
        )
    for key in ("video_id", "frame_index", "frames"):
        np.testing.assert_array_equal(visual_batch[key], student_batch[key])
    assert loop.clip_names(visual_batch)[0] != loop.clip_names(visual_batch)[1]  # each member its own clips


def test_a_population_killed_between_member_saves_resumes_exactly(visual_population, cache):
    root = visual_population / "crash"
    args = ("--config.train.population=2", "--config.seed=3", *ARGS)
    run_main("visual", root, cache, *args, "--config.train.num_steps=3")
    run_main("visual", root, cache, *args)
    # What kill -9 leaves when it strikes after member 3 saved step 6 and before member 4 did: step 6
    # of member 4 missing, no eval.json yet (they come after the last save).
    shutil.rmtree(root / "seed_4" / "checkpoints" / str(STEPS))
    for m in (3, 4):
        (root / f"seed_{m}" / "eval.json").unlink()
    run_main("visual", root, cache, *args)
    for m in (3, 4):
        got, want = root / f"seed_{m}", visual_population / "pop" / f"seed_{m}"
        assert losses(got) == pytest.approx(losses(want), rel=1e-6), m
        mean = [json.loads((w / "eval.json").read_text())["mean_ccc"] for w in (got, want)]
        assert mean[0] == pytest.approx(mean[1], rel=1e-6)
        assert sorted(int(p.name) for p in (got / "checkpoints").iterdir() if p.name.isdigit()) == [3, 6]


def test_each_member_loads_predicts_and_exports(visual_population):
    from pkd_jax.inference import export

    pop = visual_population / "pop"
    with pytest.raises(ValueError, match=r"population workdir.*seed_3"):
        api.load(pop)
    trained = api.load(pop / "seed_4")
    predictions = api.predict_dev(trained)
    scores = json.loads((pop / "seed_4" / "eval.json").read_text())["raw"]["per_video"]
    for vid, prediction in predictions.items():
        # Evaluated in the population (im2col convolutions) and alone (XLA's): equal to float rounding,
        # which an untrained model's near-zero CCC magnifies.
        assert prediction.ccc()["valence"] == pytest.approx(scores[vid]["valence"], abs=5e-4)
    exported = export.export_student(trained)
    size = trained.config.data.face_size
    frames = np.zeros((1, 5, size, size, 3), np.uint8)
    pred, _ = exported.call(frames, trained.model.zero_carry(1))
    assert np.asarray(pred).shape == (1, 5, 2)


def test_a_non_finite_member_is_named_with_its_clips():
    pending = [{"loss": np.array([1.0, 2.0]), "finite": np.array([True, True])}] * 2
    pending.append({"loss": np.array([1.0, np.nan]), "finite": np.array([True, False])})
    clips = [(s, [["a@0"], ["b@4"]]) for s in (7, 8, 9)]
    with pytest.raises(loop.NonFiniteLossError, match=r"step 9 \(population member 1\).*b@4"):
        loop.summarize(pending, clips)
    assert loop.summarize(pending[:2], clips[:2])["loss"].tolist() == [1.0, 2.0]
