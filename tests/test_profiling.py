"""Profiling: `pkd_jax.perf.profile_summary` (self times of nested trace events; `top_ops` on a real trace of
a small jitted function, every operation thread of the CPU client included) and the command that
launch/profile.sh prints to open its trace. (`top_ops` against the XProf viewer's reading of a bench trace is
measured by benchmarks/profile_compare.py, which needs the viewer; see docs/profiling.md.)"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import pytest

from pkd_jax.perf import profile_summary

REPO = Path(__file__).resolve().parents[1]
# Stands in for the environment's python: `-m pkd_jax.bench ... --profile_dir=D` writes a trace file under D.
FAKE_PYTHON = """#!/usr/bin/env bash
for arg in "$@"; do
  case $arg in --profile_dir=*) d="${arg#--profile_dir=}/train_student/plugins/profile/2026_12_02";; esac
done
mkdir -p "$d" && : > "$d/vm.xplane.pb" && echo "kind  median s"
"""


def event(name: str, start: float, duration: float) -> SimpleNamespace:
    return SimpleNamespace(name=name, start_ns=start, duration_ns=duration)


def test_self_time_is_the_duration_less_the_events_directly_inside():
    events = [
        event("dot.1", 0, 100),
        event("ThunkExecutor::Execute", 40, 20),  # dispatches the next ops, inside dot.1
        event("copy.2", 45, 10),  # inside the dispatch: counts against it, not against dot.1
        event("end: dot.1", 90, 10),
        event("add.3", 100, 30),  # starts where dot.1 ends: a sibling
        event("ThreadpoolListener::Record", 130, 0),
    ]
    self_times = dict(profile_summary._self_times(reversed(events)))  # any order
    assert self_times == {
        "dot.1": 70,
        "ThunkExecutor::Execute": 10,
        "copy.2": 10,
        "end: dot.1": 10,
        "add.3": 30,
        "ThreadpoolListener::Record": 0,
    }


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """A jax.profiler trace of three calls of a small jitted function, with its optimized HLO."""
    x = jnp.ones((256, 256), jnp.float32)

    @jax.jit
    def f(x):
        y = jnp.tanh(x @ x.T) * 0.5
        return y @ y, jnp.sum(y, axis=0)

    compiled = f.lower(x).compile()
    jax.block_until_ready(compiled(x))
    trace_dir = tmp_path_factory.mktemp("trace")
    jax.profiler.start_trace(str(trace_dir))
    for step in range(3):
        with jax.profiler.StepTraceAnnotation("step", step_num=step):
            jax.block_until_ready(compiled(x))
    jax.profiler.stop_trace()
    return trace_dir, compiled.as_text()


def test_top_ops_counts_every_operation_of_the_trace_once(traced):
    from jax.profiler import ProfileData

    trace_dir, hlo = traced
    summary = profile_summary.top_ops(trace_dir, hlo, steps=3, limit=1000)
    ops = {op["op"]: op for op in summary["top"]}
    instructions = set(re.findall(r"^\s*(?:ROOT )?%?([\w.\-]+) = ", hlo, re.MULTILINE))
    assert ops and set(ops) <= instructions
    assert any(op["source"] for op in ops.values())  # named after the HLO's op_name metadata
    assert abs(sum(op["share"] for op in ops.values()) - 1) < 1e-9
    times = [op["ms_per_step"] for op in ops.values()]
    assert times == sorted(times, reverse=True) and abs(sum(times) - summary["op_ms_per_step"]) < 1e-9
    # Every thread of the CPU plane that ran one of the module's instructions is read (a renamed client
    # thread, such as jax 0.12's tf_XLAExecute, would otherwise drop its operations), and an operation's
    # self time is at most its duration.
    (trace,) = list(trace_dir.rglob("*.xplane.pb"))
    wall: dict[str, float] = {}
    for plane in ProfileData.from_file(str(trace)).planes:
        for line in plane.lines:
            for e in line.events:
                if plane.name == "/host:CPU" and e.name in instructions:
                    wall[e.name] = wall.get(e.name, 0.0) + e.duration_ns
    assert set(wall) == set(ops)
    for name, op in ops.items():
        assert 0 <= op["ms_per_step"] <= wall[name] / 1e6 / 3 + 1e-12, name


def profile_sh(tmp_path: Path, out: Path, with_viewer: bool) -> list[str]:
    env_bin = tmp_path / "env bin"
    env_bin.mkdir(exist_ok=True)
    for name, text in (("python", FAKE_PYTHON), ("xprof", "#!/usr/bin/env bash\n")):
        if name == "python" or with_viewer:
            (env_bin / name).write_text(text)
            (env_bin / name).chmod(0o755)
    env = {**os.environ, "PYTHON": str(env_bin / "python"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        ["bash", str(REPO / "launch" / "profile.sh"), "configs/recola_student.py:tiny", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (out / "timings.txt").read_text() == "kind  median s\n"
    return done.stdout.splitlines()


def test_profile_sh_prints_the_summary_and_the_command_that_opens_the_trace(tmp_path):
    out = tmp_path / "my runs" / "profile"
    lines = profile_sh(tmp_path, out, with_viewer=True)
    assert lines[0] == "kind  median s"
    assert any(line.startswith("summary: ") and str(out / "timings.txt") in line for line in lines)
    (open_line,) = [line for line in lines if line.startswith("open:")]
    command, comment = open_line.removeprefix("open:").split("#")
    # The viewer of the bench's environment, on the absolute trace directory, quoted for the shell.
    assert shlex.split(command) == [
        str(tmp_path / "env bin" / "xprof"),
        f"--logdir={out / 'trace'}",
        "--port=8791",
    ]
    assert "http://localhost:8791/" in comment
    assert list((out / "trace").rglob("*.xplane.pb"))


def test_profile_sh_says_how_to_install_the_viewer_when_there_is_none(tmp_path):
    lines = profile_sh(tmp_path, tmp_path / "profile", with_viewer=False)
    (open_line,) = [line for line in lines if line.startswith("open:")]
    assert shlex.split(open_line.split("#")[0].removeprefix("open:"))[0] == "xprof"
    assert "pip install -e '.[profile]'" in open_line
