"""The bench command on a tiny config: JSON fields, HLO dump, profile trace, complexity."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_bench(*args: str) -> list[dict]:
    cmd = [
        sys.executable,
        "-m",
        "pkd_jax.bench",
        f"--config={REPO / 'configs' / 'recola_student.py'}:tiny",
        "--json",
        *args,
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
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
    assert "HloModule" in (tmp_path / "hlo" / "train_student_cached.hlo.txt").read_text()
    assert list((tmp_path / "profile").rglob("*.xplane.pb"))


def test_bench_complexity_reports_table3_sizes():
    (result,) = run_bench("--complexity")
    assert abs(result["student (RECOLA sizes)"]["params_M"] - 27.8) < 0.1
    assert abs(result["student (RECOLA sizes)"]["GMACs_per_frame"] - 4.8) < 0.2
