"""The paper runner end to end on a seconds-long configuration (runs, reuse, test split, tables, figures),
and its report pieces on hand-made results: paired differences, test vs dev tables, gate diagnostics."""

import json

import numpy as np
import pytest

from configs import demo
from pkd_jax.experiments import report, report_paired, runner

PNG = b"\x89PNG\r\n\x1a\n"


def test_paper_runner_end_to_end_and_reuse(tmp_path):
    # Frozen visual trunks with cached features, as the demo's (random here: the smoke run does not
    # pretrain), a fifth cheaper than trunks that train; those train through `main` in tests/train.
    config = demo.get_config("smoke,frozen")
    config.unlock()
    # The shapes of the training tests, so their compiled programs are reused from the test cache.
    config.data.face_size, config.data.clip_frames, config.data.batch_size = 32, 4, 4
    config.data.eval_chunk_frames, config.data.eval_videos_per_batch = 50, 2
    config.data.preprocess_workers = 1
    config.experiment.seeds, config.experiment.population = (0, 1), 2  # a population of two per method
    assert config.experiment.corpus_test == 1
    assert set(config.experiment.methods) == {
        "teacher",
        "teacher_black",
        "visual",
        "student",
        "student_nogate",
    }
    results = runner.run_all(config, tmp_path)

    assert set(results["methods"]) == set(config.experiment.methods)
    for method, stats in results["summary"].items():
        assert {"valence", "arousal"} <= set(stats), method
        assert all(abs(stats[t]["mean"]) <= 1 for t in ("valence", "arousal"))
        if method.startswith("student"):
            assert 0.0 <= stats["distilled_fraction"] <= 1.0
            assert set(stats["distilled_fraction_per_seed"]) == {"0", "1"}
    # The held-out test split: every run scored its final model on it (eval.final_splits).
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["seeds"] == [0, 1] and saved["headline_split"] == "test"
    assert set(saved["test"]["methods"]) == set(config.experiment.methods)
    for method, stats in saved["test"]["summary"].items():
        assert all(abs(stats[t]["mean"]) <= 1 for t in ("valence", "arousal")), method
    assert set(saved["paired"]) == {"test", "dev"}
    assert set(saved["paired"]["test"]) == {
        "student - visual",
        "student_nogate - visual",
        "teacher - visual",
        "teacher - teacher_black",
    }
    table = (tmp_path / "results.md").read_text()
    assert saved["provenance"]["git"]["commit"] and "provenance" in saved["methods"]["teacher"]["0"]
    assert table.rstrip().endswith(f"{saved['provenance']['time'][:10]}._")  # the provenance footer
    for heading in ("Table 1", "Table 3", "Table 4", "Table 5"):
        assert heading in table
    assert "## Table 1: teacher, visual-only baseline and PKD student (test split, dev alongside)" in table
    assert "| valence (test) | arousal (test) | valence (dev) | arousal (dev) |" in table
    for section in ("## Paired differences", "### test split", "### dev split"):
        assert section in table
    assert "27.82" in table  # the RECOLA-size student of Table 3
    shown = report.console_summary(
        table
    )  # what the console prints: the headline table, the paired differences
    assert "## Table 1" in shown and "### test split" in shown and "Table 3" not in shown
    for png in ("figure4.png", "training_curves.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG
    if saved["gate"]:  # written only by gated students whose loop stores the gate's diagnostics
        assert (tmp_path / "gate.png").read_bytes()[:8] == PNG
    else:
        assert "gate.png: not written, no gate diagnostics found" in table

    # Started again, the runner reuses every finished run instead of training it again.
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("eval*.json")}
    assert len(stamps) == 2 * 2 * len(config.experiment.methods)  # eval.json and eval_test.json per seed
    assert (tmp_path / "runs" / "student" / "population_0-1" / "population.json").is_file()
    runner.run_all(config, tmp_path)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("eval*.json")} == stamps

    # The gate sweep in the same workdir reuses teacher, baseline and no-gate student; trains its grid.
    from configs import gate_sweep as sweep_config
    from pkd_jax.experiments import sweep as gate_sweep

    sweep = sweep_config.get_config("smoke")
    sweep.unlock()
    sweep.model.freeze_visual_cnn, sweep.model.frozen_features = True, "cached"  # the runs above
    sweep.data.face_size, sweep.data.clip_frames, sweep.data.batch_size = 32, 4, 4
    sweep.data.eval_chunk_frames, sweep.data.eval_videos_per_batch = 50, 2
    sweep.data.preprocess_workers = 1
    out = gate_sweep.run_sweep(sweep, tmp_path)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("eval*.json") if p in stamps} == stamps
    shares = out["shares"][0]
    assert set(shares) == {"window25", "clip", "batch"}
    for row in shares.values():
        assert all(0.0 <= row[f"share@{t:g}"] <= 1.0 for t in sweep.experiment.sweep.thetas)
        assert row["gamma_q5"] <= row["gamma_q50"] <= row["gamma_q95"]
    assert set(out["scores"]) >= {"visual", "student_nogate", "window25_q0.5"}
    window = json.loads((tmp_path / "runs/sweep/window25_q0.5/seed_0/gate.json").read_text())
    assert window["context"] == "window" and window["theta"] == pytest.approx(
        shares["window25"]["theta@q0.5"]
    )
    assert "Gate sweep (dev only)" in (tmp_path / "sweep.md").read_text()
    assert json.loads((tmp_path / "sweep.json").read_text())["provenance"]["git"]["commit"]


def test_recola_runner_config_needs_data_root(tmp_path):
    from configs import recola_paper

    config = recola_paper.get_config()
    assert config.model.vgg_width == 1.0 and config.experiment.seeds == (0, 1, 2, 3, 4)
    assert config.experiment.corpus_test == 0
    with pytest.raises(ValueError, match=r"data\.root is not set"):
        runner.run_all(config, tmp_path)


def test_final_splits_follow_the_prepared_cache(tmp_path):
    config = demo.get_config("smoke")
    config.unlock()
    config.data.cache = str(tmp_path / "cache")
    assert runner.method_config(config, "visual", 0, tmp_path).eval.final_splits == ()  # not prepared
    (tmp_path / "cache").mkdir()
    videos = {"train_1": {"split": "train", "status": "ok"}, "test_1": {"split": "test", "status": "ok"}}
    (tmp_path / "cache/manifest.json").write_text(json.dumps({"version": 1, "videos": videos}))
    student = runner.method_config(config, "student", 3, tmp_path)
    assert student.eval.final_splits == ("test",) and student.seed == 3
    assert student.teacher.workdir == str(tmp_path / "runs/teacher/seed_3")
    videos["test_1"]["status"] = "failed"  # a failed test video is no test split
    (tmp_path / "cache/manifest.json").write_text(json.dumps({"version": 1, "videos": videos}))
    assert runner.method_config(config, "teacher", 0, tmp_path).eval.final_splits == ()
    assert runner.gated(config, "student") and not runner.gated(config, "student_nogate")


def _eval(valence: float, arousal: float, videos: tuple[str, ...]) -> dict:
    """An `eval.json` of the loop's structure with the given mean-over-videos CCC."""
    scores = {"valence": valence, "arousal": arousal}
    return {
        "raw": {
            "mean_over_videos": scores,
            "concatenated": scores,
            "per_video": dict.fromkeys(videos, scores),
        },
        "mean_ccc": (valence + arousal) / 2,
        "score": "mean_over_videos",
    }


def _results(seeds: list[int], with_test: bool, extra_methods: tuple[str, ...] = ()) -> dict:
    """Hand-made runner results: the student beats the baseline by 0.05 +- 0.01 on arousal, not on valence."""
    rng = np.random.default_rng(0)
    offsets = {"teacher": 0.3, "teacher_black": 0.29, "visual": 0.0, "student": 0.0, "student_nogate": 0.01}
    offsets |= dict.fromkeys(extra_methods, 0.0)
    evals = {}
    for split, videos in (("dev", ("dev_1",)), ("test", ("test_1", "test_2"))):
        evals[split] = {m: {} for m in offsets}
        for s in seeds:
            seed_effect = rng.normal(0, 0.1)  # shared by every method of the seed: paired away
            for m, off in offsets.items():
                gain = 0.05 + rng.normal(0, 0.01) if m == "student" else 0.0
                noise = rng.normal(0, 0.03, 2)
                evals[split][m][s] = _eval(
                    0.2 + off + seed_effect + noise[0], 0.1 + off + seed_effect + gain, videos
                )
    summary = {s: report.summarize(evals[s]) for s in evals}
    complexity = {"student (this config)": {"params_M": 0.1, "GMACs_per_frame": 0.01}}
    return {
        "config": {"data": {"dataset": "synthetic", "window_subsequences": 0, "root": "x"}},
        "seeds": seeds,
        "headline_split": "test" if with_test else "dev",
        "methods": evals["dev"],
        "summary": summary["dev"],
        "test": {"methods": evals["test"], "summary": summary["test"]} if with_test else None,
        "paired": {
            s: report_paired.paired_table(evals[s]) for s in (("test", "dev") if with_test else ("dev",))
        },
        "gate": {},
        "gate_png": False,
        "complexity": complexity,
        "runtime_s": 60.0,
    }


def test_paired_differences_tell_a_real_effect_from_seed_noise():
    results = _results(list(range(5)), with_test=True)
    row = results["paired"]["test"]["student - visual"]
    assert row["seeds"] == [0, 1, 2, 3, 4] and row["targets"]["arousal"]["n"] == 5
    assert row["targets"]["arousal"]["excludes_zero"]  # +0.05 with seed-to-seed spread 0.01
    assert row["targets"]["arousal"]["mean"] == pytest.approx(0.05, abs=0.02)
    boot = row["targets"]["arousal"]["bootstrap"]  # every recording gains the same: only seeds vary
    assert boot["excludes_zero"] and (boot["n_seeds"], boot["n_recordings"]) == (5, 2)
    text = report.markdown(results)
    assert "Scores on the held-out test split (2 videos with ratings" in text
    assert "| valence (test) | arousal (test) | valence (dev) | arousal (dev) |" in text
    section = text[text.index("## Paired differences") :]
    assert section.index("### test split") < section.index("### dev split")
    assert "| Student (PKD, paper gate) − Visual-only baseline |" in section
    assert "excludes 0" in section and "includes 0" in section
    assert "(bootstrap over 5 seeds x 2 recordings)" in section and "Seeds only (t-interval" in section
    assert "(one recording: nothing to resample over recordings, no interval)" in section  # dev: one video
    assert "gate.png: not written, no gate diagnostics found" in text


def test_the_distillation_table_lists_every_term_with_its_paired_difference():
    terms = tuple(f"student_{t}" for t in runner.DISTILL_METHODS)
    assert set(terms) <= set(runner.METHODS)
    assert all(runner.METHODS[m]["loss.distill"] == m.removeprefix("student_") for m in terms)
    text = report.markdown(_results(list(range(3)), with_test=True, extra_methods=terms))
    table = text[text.index("## Distillation terms") : text.index("## Table 5")]
    for label in (
        "MSE feature regression",
        "similarity-preserving",
        "relational KD",
        "PKDOT optimal transport",
        "response CCC",
    ):
        assert f"| Student (paper gate, {label}) |" in table
    assert "| Student (PKD, no gate) |" not in table
    paired = text[text.index("## Paired differences") :]
    assert "| Student (paper gate, PKDOT optimal transport) − Visual-only baseline |" in paired
    assert "## Distillation terms" not in report.markdown(_results([0, 1], with_test=False))


def test_beyond_the_paper_methods_configs_table_and_comparisons(tmp_path):
    config = demo.get_config("beyond")
    beyond = ("teacher_pv", "teacher_apv", "student_pv", "student_two")
    assert set(beyond) <= set(config.experiment.methods) <= set(runner.METHODS)
    # One-stage needs trainable trunks: not with the pretrained frozen ones, in the smoke variant.
    assert "student_onestage" not in config.experiment.methods
    assert "student_onestage" in demo.get_config("smoke,beyond").experiment.methods
    two = runner.method_config(config, "student_two", 3, tmp_path)
    assert two.teacher.workdir == "" and two.teacher.workdirs == (
        str(runner.run_dir(tmp_path, "teacher", 3)),
        str(runner.run_dir(tmp_path, "teacher_pv", 3)),
    )
    pv = runner.method_config(config, "student_pv", 3, tmp_path)
    assert pv.teacher.workdir == str(runner.run_dir(tmp_path, "teacher_pv", 3)) and pv.teacher.workdirs == ()
    one = runner.method_config(config, "student_onestage", 3, tmp_path)
    assert one.teacher.mode == "joint" and not one.teacher.workdir and one.loss.gate == "none"
    assert runner.method_config(config, "teacher_apv", 3, tmp_path).model.teacher_modalities == (
        "audio", "visual", "physio",
    )  # fmt: skip
    text = report.markdown(_results([0, 1, 2], with_test=True, extra_methods=(*beyond, "student_onestage")))
    table = text[text.index("## Beyond the paper") : text.index("## Table 5")]
    for label in ("Teacher (physio + visual)", "Student of two teachers", "Student, one-stage"):
        assert f"| {label}" in table
    assert "## Distillation terms" not in text  # these students are not distillation terms
    paired = text[text.index("## Paired differences") :]
    for row in (
        "Teacher (physio + visual) − Teacher (audio + visual), frame retention",
        "Teacher (audio + visual + physio) − Teacher (audio + visual), frame retention",
        "Student of two teachers, A+V and P+V (paper gates, average) − Student (PKD, paper gate)",
        "Student, one-stage with its A+V teacher (no gate) − Student (PKD, no gate)",
    ):
        assert f"| {row} |" in paired


def test_without_a_test_split_the_tables_say_dev():
    results = _results([0, 1, 2], with_test=False)
    text = report.markdown(results)
    assert "(test" not in text and "### test split" not in text
    assert "## Table 1: teacher, visual-only baseline and PKD student (dev split)" in text
    assert "| method | valence (dev) | arousal (dev) |" in text
    assert "RECOLA's test labels are not public" in text and "### dev split" in text


def test_strong_report_has_one_seed_paired_differences():
    results = _results([0], with_test=False)
    results["config"]["data"]["window_subsequences"] = 8
    results["complexity"] = {
        "student (this config)": {"params_M": 0.1, "GMACs_per_frame": 0.01, "GMACs_per_window": 1}
    }
    text = report.markdown(results)
    assert "Table 6" in text and "## Paired differences" in text
    assert "(one seed: an anecdote, no interval)" in text


def test_gate_figure_and_diagnostics(tmp_path):
    seeds = [0, 1]
    assert not report.gate_figure(tmp_path, ["student"], seeds, tmp_path / "gate.png")
    assert report.gate_diagnostics(tmp_path, ["student"], seeds) == {}
    rng = np.random.default_rng(0)
    for seed in seeds:
        run = tmp_path / "runs/student" / f"seed_{seed}"
        (run / "gate").mkdir(parents=True)
        gamma = rng.uniform(0.2, 1.5, 300).astype(np.float32)
        np.savez(run / "gate/gammas.npz", gamma=gamma)
        theta = float(np.quantile(gamma, 0.5))
        meta = {"context": "window", "window_frames": 250, "theta": theta, "theta_quantile": 0.5,
                "expected_distilled_share": 0.5}  # fmt: skip
        (run / "gate.json").write_text(json.dumps(meta))
    assert report.gate_figure(tmp_path, ["student", "student_nogate"], seeds, tmp_path / "gate.png")
    assert (tmp_path / "gate.png").read_bytes()[:8] == PNG
    gate = report.gate_diagnostics(tmp_path, ["student"], seeds)
    assert set(gate["student"]) == {"0", "1"} and gate["student"]["1"]["clip_starts"] == 300
    results = _results(seeds, with_test=True) | {"gate": gate, "gate_png": True}
    text = report.markdown(results)
    assert "context window, 250 frames" in text and "quantile 0.5 of the teacher's gamma" in text
    assert "gate.png: the teacher's gamma over the training clip starts" in text


def test_population_size_auto_is_one_at_a_time_on_a_cpu():
    assert runner.population_size(0, 5) == 1  # the tests run on a CPU
    assert runner.population_size(3, 5) == 3 and runner.population_size(1, 5) == 1
    with pytest.raises(ValueError, match=r"experiment\.population=-1"):
        runner.population_size(-1, 5)
