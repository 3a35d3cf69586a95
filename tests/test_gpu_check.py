"""launch/gpu_check.sh: its CPU run end to end (one JSON report with every part, every step kind benched,
the tests passed, the top operations, the population bench), a machine where JAX finds no GPU, and the report's bookkeeping."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from pkd_jax.perf import gpu_check

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "launch" / "gpu_check.sh"


def test_cpu_check_writes_one_report_of_every_part(tmp_path):
    from pkd_jax.perf.train_step import KINDS

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GPU_CHECK_", "JAX_", "XLA_"))},
        "PYTHON": sys.executable,
        "GPU_CHECK_SCRATCH": str(tmp_path / "scratch"),
        # The test suite's compilation cache (tests/conftest.py): later runs of the suite compile nothing.
        "GPU_CHECK_CACHE": str(REPO / ".pytest_cache" / "jax_compilation"),
        # One quick test of the --cpu default pair: the part's run and its report are what is tested here,
        # the suite runs the other itself.
        "GPU_CHECK_TESTS": "tests/test_conv.py::test_max_pool_2x2_matches_reduce_window",
    }
    out = tmp_path / "out"
    done = subprocess.run(
        ["bash", str(SCRIPT), "--cpu", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["ok"] and report["failed_parts"] == [] and report["mode"] == "cpu"
    assert report["date"] and report["backend"] == "cpu" and report["devices"][0]["platform"] == "cpu"
    assert report["versions"]["jax"] and report["versions"]["jaxlib"]
    parts = report["parts"]
    assert {"install", "devices", "tests"} <= set(parts)
    assert any(name.startswith("bench_") for name in parts) and any(
        name.startswith("profile_") for name in parts
    )
    assert all(p["status"] in ("ok", "not_needed") and p["wall_s"] >= 0 for p in parts.values())
    assert parts["install"]["status"] == "not_needed"
    assert report["tests"]["exit_code"] == 0 and report["tests"]["passed"] > 0
    assert report["tests"]["failed"] == report["tests"]["errors"] == 0
    # The CPU dry run's kinds (a GPU run plans every kind of KINDS: test_gpu_plan_benches_every_kind), with finite step
    # times and MFU.
    bench = report["bench"]
    assert {r["kind"] for r in bench} == set(gpu_check.CPU_KINDS) <= set(KINDS) and report[
        "bench_missing"
    ] == []
    assert all(
        math.isfinite(r["step_s_median"]) and r["step_s_median"] > 0 and 0 < r["mfu"] < 1 for r in bench
    )
    assert {r["batch_clips"] for r in bench} == {2, 4} and {r["dtype"] for r in bench} == {
        "float32",
        "bfloat16",
    }
    assert all(r["platform"] == "cpu" and r["face_size"] == 32 and "provenance" in r for r in bench)
    # MTCNN's full cascade and tracking step, timed.
    assert {r["program"] for r in report["mtcnn"]} == {"detect", "refine"} and parts["mtcnn"][
        "status"
    ] == "ok"
    assert all(r["frames_per_s"] > 0 and r["batch_frames"] == 16 for r in report["mtcnn"])
    top = report["top_ops"]
    assert top["kind"] in KINDS and top["top"] and top["top"][0]["ms_per_step"] > 0
    # Populations: S seeds in one vmapped program against seeds in a row, each with its seeds/hour.
    population = report["population"]
    assert [r["members"] for r in population] == [2] and parts["population"]["status"] == "ok"
    assert all(r["population"]["seeds_per_hour"] > 0 and r["torch"] is None for r in population)
    for r in population:  # the bench command's population rows (its PyTorch arm: tests/test_bench.py)
        assert r["population"]["compile_s"] > 0 and r["sequential"]["first_seed"]["compile_s"] > 0
        assert r["sequential"]["later_seed"]["compile_s"] == 0  # later seeds reuse the compiled step
        ratio = r["population"]["seeds_per_hour"] / r["sequential"]["seeds_per_hour"]
        assert r["population_over_sequential"] == ratio
    assert (out / "logs" / "tests.xml").exists() and not list(out.rglob("*.xplane.pb"))  # traces stay out


FAKE_PYTHON = """#!/usr/bin/env bash
echo "XLA_FLAGS=${XLA_FLAGS-unset} JAX_PLATFORMS=${JAX_PLATFORMS-unset} $*" >> "$(dirname "$0")/calls.log"
exit 1
"""


def test_no_gpu_fails_clearly_and_drops_cpu_xla_flags(tmp_path):
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    env = {
        **os.environ,
        "PYTHON": str(python),
        "GPU_CHECK_SCRATCH": str(tmp_path / "scratch"),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4 --xla_cpu_use_thunk_runtime=true --xla_dump_to=/x",
    }
    done = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "JAX sees no GPU" in done.stderr and "--cpu" in done.stderr
    assert json.loads((tmp_path / "out" / "gpu_check.json").read_text())["ok"] is False
    calls = (python.parent / "calls.log").read_text().splitlines()
    assert calls and all(c.startswith("XLA_FLAGS=--xla_dump_to=/x JAX_PLATFORMS=unset ") for c in calls)
    rows = [line.split("\t") for line in (tmp_path / "out" / "logs" / "parts.tsv").read_text().splitlines()]
    assert [(r[0], r[1]) for r in rows] == [
        ("backend", "failed"), ("install", "failed"), ("backend_after_install", "failed"), ("devices", "failed"),
        ("tests", "skipped"), ("bench", "skipped"), ("profile", "skipped"), ("mtcnn", "skipped"),
        ("population", "skipped"),
    ]  # fmt: skip


def test_plan_rotates_kinds_on_cpu_and_profiles_after_the_first_bench_with_the_kind():
    kinds = ["a", "b", "student_cached"]
    assert gpu_check.bench_plan(kinds, gpu_check.parse_settings("64:bfloat16 8:float32")) == [
        ("bench", 64, "bfloat16", "a,b,student_cached"),
        ("profile", 64, "bfloat16", "student_cached"),
        ("bench", 8, "float32", "a,b,student_cached"),
    ]
    assert gpu_check.bench_plan(kinds, gpu_check.CPU_SETTINGS, rotate=True) == [
        ("bench", 2, "float32", "a,student_cached"),
        ("profile", 2, "float32", "student_cached"),
        ("bench", 4, "bfloat16", "b"),
    ]
    assert gpu_check.bench_plan(["x", "y"], [(8, "float32")], profile_kind="y")[-1] == (
        "profile",
        8,
        "float32",
        "y",
    )


def test_gpu_plan_benches_every_kind_in_every_setting(tmp_path):
    from pkd_jax.perf.train_step import KINDS

    gpu_check.setup(tmp_path, cpu=False)
    rows = [line.split("\t") for line in (tmp_path / "plan.tsv").read_text().splitlines()]
    benched = [
        (int(batch), dtype, set(kinds.split(","))) for tag, batch, dtype, kinds in rows if tag == "bench"
    ]
    assert benched == [(b, d, set(KINDS)) for b, d in gpu_check.GPU_SETTINGS]


def test_a_timed_out_bench_and_a_lost_kind_fail_the_report(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "plan.tsv").write_text("bench\t8\tfloat32\ta,b\nbench\t64\tbfloat16\ta,b\n")
    (logs / "parts.tsv").write_text(
        "devices\tok\t0\t1.0\t60\t\ncompile_b8_float32\tfailed\t1\t9.0\t60\t\ntests\ttimeout\t124\t2.0\t60\t\n"
        "bench_b8_float32\tok\t0\t3.0\t60\t\nbench_b64_bfloat16\ttimeout\t124\t60.0\t60\t\n"
    )
    (logs / "devices.json").write_text(json.dumps({"backend": "gpu", "devices": [{"id": 0}]}))
    (logs / "tests.out").write_text(
        "tests/test_a.py::test_x[1-2] PASSED     [ 33%]\ntests/test_a.py::test_y FAILED  [ 66%]\n"
    )
    (logs / "compile_b8_float32.out").write_text(
        json.dumps({"kind": "a", "compile_s": 42.0, "provenance": {}})
    )
    line = {
        "kind": "a",
        "step_s_median": 0.5,
        "batch_clips": 8,
        "dtype": "float32",
        "mfu": 0.1,
        "compile_s": 1.0,
    }
    (logs / "bench_b8_float32.out").write_text(
        f"log\n{json.dumps(line)}\n" + '{"kind": "b", "step_s_median": NaN}\n'
    )
    report, ok = gpu_check.assemble(tmp_path)
    assert not ok
    # A failed background compile alone fails nothing (the timed run compiles what it missed).
    assert report["failed_parts"] == ["tests", "bench_b8_float32", "bench_b64_bfloat16"]
    assert report["bench_missing"] == ["b b8 float32", "a b64 bfloat16", "b b64 bfloat16"]
    assert report["bench"][0]["warmup_compile_s"] == 42.0 and report["bench_warmup"] == [
        {"kind": "a", "compile_s": 42.0}
    ]
    assert report["parts"]["bench_b64_bfloat16"]["exit_code"] == 124
    # The tests ran out of time before pytest wrote its report: counted from the -v lines.
    assert report["tests"] == {
        "selection": "", "passed": 1, "failed": 1, "errors": 0, "skipped": 0, "partial": True, "exit_code": 124,
    }  # fmt: skip
    (logs / "tests.xml").write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1"/></testsuites>'
    )
    assert gpu_check.pytest_counts(logs / "tests.xml", logs / "tests.out") == {
        "passed": 1, "failed": 1, "errors": 0, "skipped": 1,
    }  # fmt: skip
    assert gpu_check.cli(["assemble", str(tmp_path)]) == 1
    assert json.loads((tmp_path / "gpu_check.json").read_text())["ok"] is False
