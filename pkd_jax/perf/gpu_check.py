"""The helper of `launch/gpu_check.sh`: its plan of bench runs, the device report, and the one JSON file.

The script runs each part (backend check, install, devices, tests, background compiles, timed bench runs,
profile, MTCNN, population) as a process under a time limit and records a row per part in `OUT/logs/parts.tsv` (name, status,
exit code, wall seconds, limit, note), its stdout in `OUT/logs/<name>.out` and stderr in `<name>.err`.
`setup` writes the devices and versions (`devices.json`) and the plan (`plan.tsv`); `assemble` gathers it all
into `OUT/gpu_check.json` and returns the exit status: 0 when every part passed (a background compile may
fail: the timed run compiles what it missed), the tests passed, every planned bench result is there with
a finite step time, and the population bench reported seeds per hour. A failed part is recorded, never raised. Run from the script as

    python -c 'import sys; from pkd_jax.perf import gpu_check as g; sys.exit(g.cli(sys.argv[1:]))' setup ...
"""

from __future__ import annotations

import datetime
import json
import math
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# (clips per batch, compute dtype) in the order they run: the throughput one first, then the default training
# setup (8 clips, float32), then the rest. On CPU (tiny config) the kinds rotate over two settings, each once.
GPU_SETTINGS = ((64, "bfloat16"), (8, "float32"), (64, "float32"), (8, "bfloat16"))
CPU_SETTINGS = ((2, "float32"), (4, "bfloat16"))
# The CPU dry run benches two quick-to-compile kinds, one per setting, enough to run every part of the
# script in under a minute inside `make test` (test_bench compiles the full steps); a GPU run benches
# every kind.
CPU_KINDS = ("visual_frozen", "teacher_frozen")
PROFILE_KIND = "student_cached"
OK_STATUSES = ("ok", "not_needed")
WARMUP_PREFIX = "compile_"  # the background compiles of the bench settings: their failures are not fatal


def parse_settings(spec: str) -> list[tuple[int, str]]:
    """`"64:bfloat16 8:float32"` -> [(64, "bfloat16"), (8, "float32")]."""
    pairs = [item.split(":") for item in spec.split()]
    return [(int(batch), dtype) for batch, dtype in pairs]


def bench_plan(
    kinds: Sequence[str], settings: Sequence[tuple[int, str]], rotate: bool = False, profile_kind: str = ""
) -> list[tuple[str, int, str, str]]:
    """Rows (tag, batch, dtype, comma-separated kinds) in running order: `bench` rows, one per setting with
    every kind (with `rotate`, kind i only in setting i mod n), and after the first bench row that has it, a
    `profile` row of `profile_kind` (default `PROFILE_KIND`, else the first kind) in that same setting."""
    profile_kind = profile_kind or (PROFILE_KIND if PROFILE_KIND in kinds else kinds[0])
    rows: list[tuple[str, int, str, str]] = []
    profiled = False
    for i, (batch, dtype) in enumerate(settings):
        chosen = [k for j, k in enumerate(kinds) if not rotate or j % len(settings) == i]
        if chosen:
            rows.append(("bench", batch, dtype, ",".join(chosen)))
        if not profiled and profile_kind in chosen:
            rows.append(("profile", batch, dtype, profile_kind))
            profiled = True
    return rows


def device_report() -> dict[str, Any]:
    """The devices JAX sees, `nvidia-smi -L` (None without it) and JAX's own environment summary."""
    import jax

    smi = None
    if shutil.which("nvidia-smi"):
        done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        smi = (done.stdout + done.stderr).strip()
    devices = [{"id": d.id, "platform": d.platform, "device_kind": d.device_kind} for d in jax.devices()]
    info = jax.print_environment_info(return_string=True)
    return {
        "backend": jax.default_backend(),
        "devices": devices,
        "nvidia_smi_L": smi,
        "environment_info": info,
    }


def setup(logs: Path, cpu: bool, settings_spec: str = "", profile_kind: str = "") -> None:
    """Write `devices.json` (devices, versions, provenance) and `plan.tsv` (`bench_plan` over the step kinds
    of `pkd_jax.perf.train_step.KINDS` at run time, `CPU_KINDS` of them on the CPU) under `logs`."""
    from pkd_jax.perf.train_step import KINDS
    from pkd_jax.provenance import provenance

    report = {**device_report(), "provenance": provenance()}
    report["versions"] = {"python": sys.version.split()[0], **report["provenance"].get("packages", {})}
    (logs / "devices.json").write_text(json.dumps(report, indent=1))
    settings = parse_settings(settings_spec) if settings_spec else (CPU_SETTINGS if cpu else GPU_SETTINGS)
    kinds = [k for k in KINDS if k in CPU_KINDS] if cpu else list(KINDS)
    rows = bench_plan(kinds, settings, rotate=cpu and not settings_spec, profile_kind=profile_kind)
    (logs / "plan.tsv").write_text("".join("\t".join(map(str, row)) + "\n" for row in rows))


def _lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.exists() else []


def _tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in _lines(path) if line]


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of the lines of `path` that hold one (the bench's `--json` output)."""
    found = []
    for line in (line for line in _lines(path) if line.startswith("{")):
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return found


_JUNIT = (("tests", "tests"), ("failed", "failures"), ("errors", "errors"), ("skipped", "skipped"))
_WORDS = (("passed", "PASSED"), ("failed", "FAILED"), ("errors", "ERROR"), ("skipped", "SKIPPED"))


def pytest_counts(junit: Path, verbose_output: Path) -> dict[str, Any]:
    """passed / failed / errors / skipped from pytest's `--junitxml` report or, from a run stopped before it
    wrote one, from the result words of its `-v` output (then marked `partial`)."""
    if junit.exists():
        counts = {key: 0 for key, _ in _JUNIT}
        for suite in ET.parse(junit).getroot().iter("testsuite"):
            for key, attr in _JUNIT:
                counts[key] += int(suite.get(attr, 0))
        return {"passed": counts.pop("tests") - sum(counts.values()), **counts}
    lines = [line.rsplit(" [", 1)[0].split() for line in _lines(verbose_output) if "::" in line]
    words = [words[-1] for words in lines if words]
    return {**{key: words.count(word) for key, word in _WORDS}, "partial": True}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def assemble(out_dir: Path) -> tuple[dict[str, Any], bool]:
    """The report of a run from the files under `out_dir/logs`, and whether every check passed."""
    logs = out_dir / "logs"
    meta = {row[0]: row[1] if len(row) > 1 else "" for row in _tsv(logs / "meta.tsv")}
    parts: dict[str, dict[str, Any]] = {}
    for name, status, rc, wall, limit, *note in _tsv(logs / "parts.tsv"):
        parts[name] = {
            "status": status, "exit_code": int(rc) if rc else None, "wall_s": float(wall),
            "timeout_s": float(limit) if limit else None, "note": "\t".join(note), "log": f"logs/{name}.err",
        }  # fmt: skip
    devices = json.loads((logs / "devices.json").read_text()) if (logs / "devices.json").exists() else {}
    bench, warmup, missing, top_ops = [], [], [], None
    for tag, batch, dtype, kinds in _tsv(logs / "plan.tsv"):
        name = f"{tag}_b{batch}_{dtype}"
        lines = json_lines(logs / f"{name}.out")
        if tag == "profile":
            summary = next((line["top_ops"] for line in lines if line.get("top_ops")), None)
            top_ops = {"kind": kinds, "batch_clips": int(batch), "dtype": dtype, **(summary or {})}
            if name in parts and parts[name]["status"] == "ok" and not (summary and summary.get("top")):
                parts[name].update(status="failed", note="no top_ops in the profile run's output")
            continue
        cold = {r.get("kind"): r for r in json_lines(logs / f"{WARMUP_PREFIX}b{batch}_{dtype}.out")}
        warmup += [{k: v for k, v in r.items() if k != "provenance"} for r in cold.values()]
        for line in lines:  # the cold compile time, where the background compile compiled this step
            line["warmup_compile_s"] = cold.get(line.get("kind"), {}).get("compile_s")
        bench += lines
        got = {line.get("kind") for line in lines if _finite(line.get("step_s_median"))}
        lost = [f"{kind} b{batch} {dtype}" for kind in kinds.split(",") if kind not in got]
        missing += lost
        if lost and name in parts and parts[name]["status"] == "ok":
            parts[name].update(status="failed", note=f"no finite step time for {', '.join(lost)}")
    detector = [r for r in json_lines(logs / "mtcnn.out") if r.get("part") == "mtcnn"]
    timed = bool(detector) and all(_finite(r.get("frames_per_s")) for r in detector)
    if parts.get("mtcnn", {}).get("status") == "ok" and not timed:
        parts["mtcnn"].update(status="failed", note="no finite MTCNN frames/s")
    population = [r for r in json_lines(logs / "population.out") if r.get("what") == "population"]
    counted = bool(population) and all(
        _finite(r.get(arm, {}).get("seeds_per_hour"))
        for r in population
        for arm in ("population", "sequential")
    )
    if parts.get("population", {}).get("status") == "ok" and not counted:
        parts["population"].update(status="failed", note="no finite seeds/hour from the population bench")
    tests: dict[str, Any] = {"selection": meta.get("tests", "")}
    if "tests" in parts:
        tests.update(pytest_counts(logs / "tests.xml", logs / "tests.out"))
        tests["exit_code"] = parts["tests"]["exit_code"]
        if parts["tests"]["status"] == "ok" and not tests.get("passed"):
            parts["tests"].update(status="failed", note="no test passed")
    failed = [
        n for n, p in parts.items() if p["status"] not in OK_STATUSES and not n.startswith(WARMUP_PREFIX)
    ]
    total_s = round(time.time() - float(meta["start_epoch_s"]), 3) if "start_epoch_s" in meta else None
    ok = bool(parts) and not failed and not missing and "tests" in parts and bool(devices)
    report = {
        "check": "pkd_jax launch/gpu_check.sh", "mode": meta.get("mode"), "date": meta.get("date"),
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "ok": ok,
        "failed_parts": failed, "wall_s": total_s, "meta": meta,
        "devices": devices.get("devices"), "backend": devices.get("backend"),
        "nvidia_smi_L": devices.get("nvidia_smi_L"), "versions": devices.get("versions"),
        "environment_info": devices.get("environment_info"), "provenance": devices.get("provenance"),
        "parts": parts, "tests": tests, "bench": bench, "bench_missing": missing, "top_ops": top_ops,
        "bench_warmup": warmup, "mtcnn": detector, "population": population,
    }  # fmt: skip
    return report, ok


def cli(argv: Sequence[str]) -> int:
    """`setup LOGS cpu|gpu [SETTINGS] [PROFILE_KIND]` or `assemble OUT_DIR` (writes `OUT_DIR/gpu_check.json`,
    prints a summary, returns 0 when everything passed, else 1)."""
    if argv[0] == "setup":
        setup(Path(argv[1]), argv[2] == "cpu", *argv[3:5])
        return 0
    report, ok = assemble(Path(argv[1]))
    (Path(argv[1]) / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    for r in report["bench"]:
        n = {
            k: float(r[k]) if _finite(r.get(k)) else math.nan
            for k in ("compile_s", "step_s_median", "frames_per_s")
        }
        mfu = float(r["mfu"]) if _finite(r.get("mfu")) else math.nan
        print(
            f"  {r.get('kind')!s:16} b{r.get('batch_clips')!s:<3} {r.get('dtype')!s:8} compile {n['compile_s']:6.1f} s"
            f"  step {1e3 * n['step_s_median']:9.2f} ms {n['frames_per_s']:9.1f} frames/s  MFU {100 * mfu:5.1f}%"
        )
    for r in report["mtcnn"]:
        print(
            f"  mtcnn {r['program']:7} b{r['batch_frames']:<3} {r['height']}x{r['width']}  compile "
            f"{r['compile_s']:6.1f} s  {r['frames_per_s']:9.1f} frames/s"
        )
    for r in report["population"]:
        pop, seq = r["population"], r["sequential"]
        print(
            f"  population {r['kind']} S={r['members']:<3} {pop['seeds_per_hour']:9.0f} seeds/h (compile "
            f"{pop['compile_s']:5.1f} s), in a row {seq['seeds_per_hour']:9.0f}: x{r['population_over_sequential']:.2f}"
        )
    print(
        "gpu_check: "
        + ("all parts passed" if ok else f"FAILED {report['failed_parts']} {report['bench_missing']}")
    )
    return 0 if ok else 1
