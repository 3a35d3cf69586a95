"""The shell entry points in launch/: syntax, usage and the commands their dry-run modes print."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
SCRIPTS = ("train_local.sh", "train_slurm.sbatch", "profile.sh", "paper.sh", "gpu_check.sh")


def run(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "DRY_RUN", "MODE", "GPUS_"))}
    return subprocess.run(
        ["bash", str(LAUNCH / script), *args], cwd=REPO, env={**clean, **(env or {})},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


@pytest.fixture
def slurm_env(tmp_path) -> dict[str, str]:
    """A SLURM job of two nodes as the batch script sees it, with a stand-in `scontrol`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(
        '#!/usr/bin/env bash\n[[ "$1 $2 $3" == "show hostnames gpu[07-08]" ]] && printf "gpu07\\ngpu08\\n"\n'
    )
    scontrol.chmod(0o755)
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_JOB_ID": "123456",
        "GPUS_PER_NODE": "4",
        "DRY_RUN": "1",
        "PYTHON": "/opt/env/bin/python",
    }


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse_and_document_their_usage(script):
    path = LAUNCH / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    header = path.read_text().split("set -euo pipefail")[0]
    assert "launch/" + script in header  # a usage line
    assert "PYTHON" in header or script == "profile.sh"  # the environment it expects


def test_slurm_dry_run_one_process_per_node(slurm_env):
    done = run(
        "train_slurm.sbatch", "configs/recola_student.py", "/shared/runs/my student",
        "--config.data.root=/shared/RECOLA", "--config.train.profile_steps=(10, 20)", env=slurm_env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary, exports, srun = done.stdout.strip().splitlines()
    assert summary.startswith("# 2 node(s) x 4 GPU(s), per_host: 2 process(es) of 4 device(s)")
    # The coordinator is the first host of the node list, on a port derived from the job id.
    assert shlex.split(exports) == [
        "export", "JAX_COORDINATOR_ADDRESS=gpu07:23456", "JAX_LOCAL_DEVICE_IDS=0,1,2,3",
    ]  # fmt: skip
    assert shlex.split(srun) == [
        "srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
        "/opt/env/bin/python", "-m", "pkd_jax.main", "--config=configs/recola_student.py",
        "--workdir=/shared/runs/my student", "--config.data.root=/shared/RECOLA",
        "--config.train.profile_steps=(10, 20)",
    ]  # fmt: skip


def test_slurm_dry_run_one_process_per_gpu(slurm_env):
    env = {**slurm_env, "MODE": "per_gpu", "COORDINATOR_PORT": "4000"}
    done = run("train_slurm.sbatch", "configs/recola_teacher.py", "runs/t", env=env)
    assert done.returncode == 0, done.stderr
    summary, exports, srun = done.stdout.strip().splitlines()
    assert "per_gpu: 8 process(es) of 1 device(s)" in summary
    assert shlex.split(exports) == [
        "export",
        "JAX_COORDINATOR_ADDRESS=gpu07:4000",
    ]  # JAX picks each task's GPU
    assert shlex.split(srun)[:5] == [
        "srun",
        "--nodes=2",
        "--ntasks=8",
        "--ntasks-per-node=4",
        "--kill-on-bad-exit=1",
    ]


def test_slurm_script_refuses_bad_setups(slurm_env):
    outside = run("train_slurm.sbatch", "c.py", "w", env={"DRY_RUN": "1"})
    assert outside.returncode == 2 and "SLURM_JOB_NODELIST is not set" in outside.stderr
    bad_mode = run("train_slurm.sbatch", "c.py", "w", env={**slurm_env, "MODE": "per_rack"})
    assert bad_mode.returncode == 2 and "MODE=per_rack" in bad_mode.stderr
    usage = run("train_slurm.sbatch", env=slurm_env)
    assert usage.returncode == 2 and "sbatch [--nodes=N]" in usage.stderr


def test_local_and_paper_dry_runs_print_their_commands():
    env = {"DRY_RUN": "1", "PYTHON": "py"}
    local = run("train_local.sh", "configs/recola_visual.py", "runs/v", "--config.seed=3", env=env)
    assert local.returncode == 0, local.stderr
    assert shlex.split(local.stdout) == [
        "py", "-m", "pkd_jax.main", "--config=configs/recola_visual.py", "--workdir=runs/v", "--config.seed=3",
    ]  # fmt: skip
    assert run("train_local.sh", "only_config.py", env=env).returncode == 2
    paper = run("paper.sh", env=env)
    assert shlex.split(paper.stdout) == [
        "py", "-m", "pkd_jax.experiments.paper", "--config=configs/demo.py", "--workdir=runs/demo",
    ]  # fmt: skip
