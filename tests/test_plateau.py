"""The convergence rule on hand-made dev curves, its report section, and the learning-curve figure, from
hand-written `metrics.jsonl` files (no training)."""

import json

import pytest

from pkd_jax.experiments import plateau, report
from pkd_jax.experiments.report_figures import training_curves

PNG = b"\x89PNG\r\n\x1a\n"
STEPS = (100, 200, 300, 400, 500)
# Mean over targets and seeds, by construction below: one flat after step 300, one still rising.
FLAT = (0.10, 0.30, 0.40, 0.41, 0.40)
RISING = (0.05, 0.10, 0.15, 0.20, 0.25)


def _seed_curves(mean: tuple[float, ...], spread: float) -> list[dict[str, plateau.Curve]]:
    """Two seeds, `mean` +- `spread`, with valence and arousal `mean` -+ 0.1: every average is `mean`."""
    seeds = []
    for sign in (1, -1):
        at = {s: m + sign * spread for s, m in zip(STEPS, mean, strict=True)}
        seeds.append(
            {"valence": {s: v + 0.1 for s, v in at.items()}, "arousal": {s: v - 0.1 for s, v in at.items()}}
        )
    return seeds


def test_a_flat_curve_has_plateaued_and_a_rising_one_has_not():
    flat = plateau.convergence(_seed_curves(FLAT, 0.05))
    assert flat is not None and flat.seeds == 2
    assert list(flat.curve) == list(STEPS) and list(flat.curve.values()) == pytest.approx(FLAT)
    assert flat.best_step == 400 and flat.best == pytest.approx(0.41)
    assert flat.final == pytest.approx(0.40) and flat.gap == pytest.approx(-0.01)
    assert flat.near_best and not flat.still_rising and flat.plateaued
    assert not plateau.Convergence(flat.curve, 2, tolerance=0.005).plateaued  # 0.01 below its best
    assert flat.first_step_within() == 300 and flat.first_step_within(0.2) == 200

    rising = plateau.convergence(_seed_curves(RISING, 0.02))
    assert rising is not None and rising.best_step == 500 and rising.gap == 0.0
    assert rising.near_best  # its last evaluation is its best: the gap alone cannot see the rise,
    assert rising.first_step_within() == 500  # but it came near its best only at the last step
    assert rising.still_rising and not rising.plateaued
    assert plateau.Convergence(rising.curve, 2, tolerance=0.06).plateaued  # 400 is within 0.06 of 500
    assert plateau.step_count({"flat": flat, "rising": rising}) == 500
    assert plateau.step_count({"flat": flat}) == 300 and plateau.step_count({}) is None


def test_a_curve_that_fell_back_has_not_plateaued_and_only_common_steps_count():
    fell = plateau.convergence(
        [{"valence": {100: 0.2, 200: 0.5, 300: 0.3, 400: 0.9}}, {"valence": {100: 0.2, 200: 0.5, 300: 0.3}}]
    )
    assert fell is not None and list(fell.curve) == [100, 200, 300]  # step 400: one seed only
    assert fell.best_step == 200 and fell.gap == pytest.approx(-0.2)
    assert not fell.near_best and not fell.still_rising and not fell.plateaued
    record = fell.to_json()
    assert record["plateaued"] is record["near_best"] is record["still_rising"] is False
    assert record["final_minus_best"] == pytest.approx(-0.2)
    assert record["eval_steps"] == [100, 200, 300] and record["first_step_within_tolerance"] == 200
    assert plateau.convergence([{}, {}]) is None


def _write_runs(workdir, method: str, means: tuple[float, ...]) -> None:
    """metrics.jsonl of two seeds as the loop writes them: train records and dev "eval" records."""
    for seed, curves in enumerate(_seed_curves(means, 0.03)):
        run = workdir / "runs" / method / f"seed_{seed}"
        run.mkdir(parents=True)
        lines = [
            {"step": s, "kind": "train", "time": 0.0, "loss": 1.0 - s / 1000} for s in range(50, 550, 50)
        ]
        for step in STEPS:
            scores = {f"raw/mean_over_videos/{t}": curves[t][step] for t in ("valence", "arousal")}
            lines.append({"step": step, "kind": "eval", "time": 0.0, "mean_ccc": 0.0, **scores})
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_the_convergence_report_reads_every_seed_of_every_method(tmp_path):
    _write_runs(tmp_path, "teacher", FLAT)
    _write_runs(tmp_path, "student", (0.10, 0.20, 0.35, 0.30, 0.25))  # peaked at 300, fell back
    _write_runs(tmp_path, "visual", RISING)
    methods = ["teacher", "student", "student_nogate", "visual"]
    conv = plateau.experiment_convergence(tmp_path, methods, [0, 1])
    assert list(conv["methods"]) == ["teacher", "student", "visual"]  # student_nogate has no runs here
    assert conv["not_plateaued"] == ["student", "visual"] and conv["step_count"] == 500
    assert conv["methods"]["teacher"]["final"] == pytest.approx(0.40)

    text = "\n".join(report._convergence_lines({"convergence": conv}))
    assert "## Convergence on dev" in text
    assert (
        "| Teacher (audio + visual), frame retention | 5 (100 to 500) | 400 | 0.410 | 0.400 | -0.010 | yes |"
        in text
    )
    assert (
        "| Student (PKD, paper gate) | 5 (100 to 500) | 300 | 0.350 | 0.250 | -0.100 | no, fell back |"
        in text
    )
    assert (
        "| Visual-only baseline | 5 (100 to 500) | 500 | 0.250 | 0.250 | +0.000 | no, still rising |" in text
    )
    assert "- Student (PKD, paper gate) has not plateaued: comparisons with it measure the optimiser." in text
    assert "- Visual-only baseline has not plateaued" in text and "retention has not" not in text
    assert "at the latest over these methods: step 500." in text
    assert report._convergence_lines({}) == []  # results written before the section existed
    for strong in (0, 8):  # the weak setting's results.md and the strong setting's (Table 6)
        data = {"dataset": "synthetic", "root": "x", "window_subsequences": strong}
        results = {"config": {"data": data}, "seeds": [0, 1], "methods": {}, "summary": {}, "test": None,
                   "paired": {}, "gate": {}, "gate_png": False, "runtime_s": 1.0, "convergence": conv,
                   "complexity": {"student": {"params_M": 0.1, "GMACs_per_frame": 0.1, "GMACs_per_window": 1}}}  # fmt: skip
        page = report.markdown(results)
        assert page.index("## Convergence on dev") < page.index("Runtime of this invocation")
        assert "| Student (PKD, paper gate) | 5 (100 to 500) | 300 |" in page


def test_the_learning_curves_figure_draws_every_method_over_its_seeds(tmp_path):
    _write_runs(tmp_path, "teacher", FLAT)
    _write_runs(tmp_path, "student", RISING)
    training_curves(
        tmp_path, ["teacher", "student", "visual"], [0, 1], tmp_path / "curves.png", report.LABELS
    )
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG
