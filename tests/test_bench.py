"""The bench command on a tiny config: JSON fields, HLO dump, profile trace, complexity (run outside the
checkout, on a user's own config file that builds on the installed defaults), and the population bench's
PyTorch arm and ratios, with its members checked against single runs (its command: tests/test_gpu_check.py)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from configs import recola_student
from pkd_jax.perf import population_bench
from tests.conftest import outside_checkout_env

REPO = Path(__file__).resolve().parents[1]
USER_CONFIG = """from pkd_jax import defaults


def get_config(arg=None):
    return defaults.stage_config("student", "recola", arg)
"""


def run_bench(*args: str, config: str | None = None, cwd: Path = REPO) -> list[dict]:
    config = config or f"{REPO / 'configs' / 'recola_student.py'}:tiny"
    cmd = [sys.executable, "-m", "pkd_jax.bench", f"--config={config}", "--json", *args]
    done = subprocess.run(
        cmd, cwd=cwd, env=outside_checkout_env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_bench_train_json_hlo_and_profile(tmp_path):
    (result,) = run_bench(
        "--kinds=student_cached", "--steps=3", "--warmup=1",
        f"--dump_hlo={tmp_path / 'hlo'}", f"--profile_dir={tmp_path / 'profile'}",
    )  # fmt: skip
    assert result["kind"] == "student_cached" and result["what"] == "train"
    for key in ("compile_s", "step_s_median", "step_s_min", "step_s_max", "frames_per_s", "flops_per_step"):
        assert result[key] > 0, key
    assert result["step_s_min"] <= result["step_s_median"] <= result["step_s_max"]
    # XLA's count adds element-wise work to the analytic conv/matmul count, but not multiples of it.
    assert 0.8 < result["xla_over_analytic_flops"] < 2.0
    assert set(result["memory_bytes"]) == {"argument", "output", "temp"}
    # MFU against this CPU's measured matmul peak: a real fraction, and consistent with its parts.
    assert "measured" in result["peak_source"] and result["peak_flops_per_s"] > 1e9
    assert 0 < result["mfu"] < 1
    assert abs(result["mfu"] - result["achieved_flops_per_s"] / result["peak_flops_per_s"]) < 1e-9
    # The profile summary names real operations of this step, costliest first.
    top = result["top_ops"]["top"]
    assert top and all(op["ms_per_step"] > 0 for op in top)
    assert [op["ms_per_step"] for op in top] == sorted((op["ms_per_step"] for op in top), reverse=True)
    assert any("conv" in op["source"] for op in top)
    assert "HloModule" in (tmp_path / "hlo" / "train_student_cached.hlo.txt").read_text()
    assert list((tmp_path / "profile").rglob("*.xplane.pb"))


def test_bench_complexity_reports_table3_sizes_outside_the_checkout(tmp_path):
    (tmp_path / "my_config.py").write_text(USER_CONFIG)
    (result,) = run_bench("--complexity", config=f"{tmp_path / 'my_config.py'}:tiny", cwd=tmp_path)
    assert abs(result["student (RECOLA sizes)"]["params_M"] - 27.8) < 0.1
    assert abs(result["student (RECOLA sizes)"]["GMACs_per_frame"] - 4.8) < 0.2
    assert len(result["provenance"]["git"]["commit"]) == 40  # the checkout pkd_jax is imported from


def test_bench_pipeline_and_preprocess_json(tmp_path):
    corpus = [f"--corpus_root={tmp_path}", "--corpus_train=1", "--corpus_dev=1", "--corpus_seconds=3",
              "--corpus_frame_size=96"]  # fmt: skip
    pre = run_bench("--what=preprocess", *corpus)
    assert len(pre) == 1 and pre[0]["what"] == "preprocess"
    assert pre[0]["videos"] == 2 and pre[0]["frames"] == 150 and not pre[0]["failed_videos"]
    assert pre[0]["frames_per_s"] > 0 and 0 < pre[0]["face_detection_share"] < 1
    pipe = run_bench("--what=pipeline", "--batches=5", *corpus)
    assert [(r["what"], r["kind"], r["with_audio"]) for r in pipe] == [
        ("pipeline", "student", False),
        ("pipeline", "teacher", True),
    ]
    assert all(r["frames_per_s"] > 0 and r["frames_per_batch"] == 4 * 4 for r in pipe)


def test_bench_strong_setting_windows():
    cmd = [sys.executable, "-m", "pkd_jax.bench", f"--config={REPO / 'configs' / 'affwild2_student.py'}:tiny",
           "--json", "--kinds=visual", "--steps=1", "--warmup=0"]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    # A window is L sub-sequences of C frames: every one of them goes through the R3D-18 trunk.
    assert result["frames_per_s"] * result["step_s_median"] == pytest.approx(2 * 4 * 4)


def test_population_bench_arms_and_members_match_single_runs():
    # The command's population rows (S seeds in one program against seeds in a row) come from its run in
    # tests/test_gpu_check.py; here the PyTorch arm and the ratios, and the members' check.
    config = recola_student.get_config("tiny")
    batches = population_bench.member_batches(config, "student_cached", 2)
    torch_runs = population_bench.train_torch(config, "student_cached", [0, 1], batches, 2, threads=1)
    assert len(torch_runs) == 2 and all(t.compile_s == 0 and t.steps_s > 0 for t in torch_runs)
    runs = {
        "population_2": [population_bench.Timing(1.0, 3.0, 2.0)],  # 6 s for two seeds
        "sequential": [[population_bench.Timing(1.0, 2.0, 1.0), population_bench.Timing(0.5, 0.0, 1.0)]],
        "torch": [torch_runs],
    }
    (row,) = population_bench._summarize(config, "student_cached", [2], 2, 1, 2, runs)
    assert row["population"]["seeds_per_hour"] == pytest.approx(2 * 3600 / 6)
    assert row["sequential"]["total_s"] == pytest.approx(4.0 + 1.5)  # the first seed, then one later seed
    assert row["population_over_sequential"] == pytest.approx(5.5 / 6)
    torch_seed = sum(t.total_s for t in torch_runs) / 2
    assert row["torch"]["seeds_per_hour"] == pytest.approx(3600 / torch_seed)
    assert row["population_over_torch"] == pytest.approx(
        row["population"]["seeds_per_hour"] * torch_seed / 3600
    )
    assert row["torch_threads"] == 1
    # Member s of one vmapped program trains what a run from seed s alone does. The frozen-trunk student
    # (the demo's) compiles in seconds; members differ by about 1e-5 of the change training made (float
    # noise of summing in another order), a member trained from another seed, batch or dropout key by
    # about 1. Populations of trainable convolutions against single runs: tests/train/test_population.py.
    diffs = population_bench.member_differences(config, "student_frozen", members=2, steps=2)
    assert len(diffs) == 2 and max(diffs) < 1e-3
