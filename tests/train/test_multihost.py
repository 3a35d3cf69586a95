"""Multi-process training on one machine: 2 CPU processes x 2 devices against 1 process x 4 devices
and against 1 device.

Each run is `pkd_jax.main` in a subprocess of its own (XLA's device count and the distributed runtime
are fixed per process). `worker` records every device's copy of the parameters and BatchNorm
statistics at each checkpoint, so the test sees what each process holds, not only what was saved.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pkd_jax.workdir.metric_writer import read_metrics
from tests.fake_cache import write_fake_cache
from tests.train.test_train import main_in_process

REPO = Path(__file__).resolve().parents[2]
STEPS = 3


def main_flags(workdir: Path, cache: Path, steps: int) -> list[str]:
    """Flags of a tiny visual-baseline run: logs and checkpoints every step, evaluates at the end.

    The trunk learns at the paper's rate, 1e-6, rather than the tiny config's 1e-3: its convolution
    biases feed BatchNorm, so their true gradient is zero, and Adam turns the rounding noise of that
    zero (which depends on how the devices' gradients are summed) into steps of +-lr. At 1e-3 that
    alone put them 4.5e-3 apart after 3 steps (2 x 2 against 1 x 4 devices); at 1e-6, 4e-6.
    """
    return [
        f"--config={REPO / 'configs' / 'recola_visual.py'}:tiny",
        f"--workdir={workdir}",
        f"--config.data.cache={cache}",
        f"--config.train.num_steps={steps}",
        "--config.optim.lr_visual_cnn=1e-6",
        "--config.train.log_every=1",
        "--config.train.eval_every=1000",
        "--config.train.checkpoint_every=1",
        "--config.train.keep_latest=3",
        "--config.data.eval_videos_per_batch=2",
    ]


def worker(dump_dir: str, *argv: str) -> None:
    """`python -m pkd_jax.main *argv`, saving `<dump_dir>/state_<step>_p<process>.npz` at each checkpoint.

    Keys are `<path in params / batch_stats>@<device id>`: one entry per local copy of every array.
    """
    import jax
    from absl import flags

    from pkd_jax import main as entry
    from pkd_jax.workdir import checkpoints as checkpoint

    save = checkpoint.Checkpointer.save

    def save_and_dump(self, step, state, *args, **kwargs):
        save(self, step, state, *args, **kwargs)
        copies = {
            f"{jax.tree_util.keystr(path)}@{shard.device.id}": np.asarray(shard.data)
            for path, leaf in jax.tree_util.tree_leaves_with_path(state.variables)
            for shard in leaf.addressable_shards
        }
        np.savez(Path(dump_dir) / f"state_{step}_p{jax.process_index()}.npz", **copies)

    checkpoint.Checkpointer.save = save_and_dump
    sys.argv = ["pkd_jax.main", *argv]  # config_flags reads its overrides from sys.argv
    entry.main(flags.FLAGS(sys.argv))


def start_worker(dump_dir: Path, argv: list[str], devices: int, log: Path) -> subprocess.Popen:
    """`worker` in a fresh Python with `devices` CPU devices, its output going to `log`."""
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); from tests.train.test_multihost import worker; "
    code += f"worker({str(dump_dir)!r}, *{argv!r})"
    env = dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(REPO / ".pytest_cache" / "jax_compilation"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
    )
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_NTASKS"):
        env.pop(name, None)
    with open(log, "w") as out:  # the child keeps its own copy of the file descriptor
        return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, stdout=out, stderr=out)


def finish(procs: dict[str, tuple[subprocess.Popen, Path]], timeout: float = 300) -> None:
    """Waits for every process; kills all of them when one fails (the others would wait for it)."""
    deadline = time.monotonic() + timeout
    failed = None
    while any(p.poll() is None for p, _ in procs.values()) and time.monotonic() < deadline and not failed:
        failed = next((n for n, (p, _) in procs.items() if p.poll() not in (None, 0)), None)
        time.sleep(0.2)
    for proc, _ in procs.values():
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    for name, (proc, log) in procs.items():
        assert proc.returncode == 0, f"{name} exited with {proc.returncode}:\n{log.read_text()[-4000:]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return dict(data)


def by_name(copies: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {}
    for key, value in copies.items():
        out.setdefault(key.rsplit("@", 1)[0], []).append(value)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The 2-process run and the 1-process 4-device run (one step longer), started together."""
    root = tmp_path_factory.mktemp("multihost")
    cache = write_fake_cache(root / "cache")
    port = free_port()
    procs = {}
    for pid in range(2):
        distributed = [f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={pid}"]
        argv = [*main_flags(root / "two", cache, STEPS), *distributed]
        procs[f"process {pid}"] = (start_worker(root, argv, 2, root / f"p{pid}.log"), root / f"p{pid}.log")
    (root / "one").mkdir()
    argv = main_flags(root / "one", cache, STEPS + 1)
    procs["single"] = (start_worker(root / "one", argv, 4, root / "one.log"), root / "one.log")
    started = time.monotonic()
    finish(procs)
    print(f"2-process and 4-device runs: {time.monotonic() - started:.1f} s")
    return root, cache


def test_two_processes_hold_identical_state_matching_one_process(runs):
    root, cache = runs
    p0, p1 = load(root / f"state_{STEPS}_p0.npz"), load(root / f"state_{STEPS}_p1.npz")
    assert {k.rsplit("@", 1)[1] for k in p0} == {"0", "1"}
    assert {k.rsplit("@", 1)[1] for k in p1} == {"2048", "2049"}  # the second process's devices
    two = by_name(p0 | p1)
    for name, copies in two.items():
        assert len(copies) == 4
        for copy in copies[1:]:
            np.testing.assert_array_equal(copy, copies[0], err_msg=name)  # every device, both processes
    one = {k: v[0] for k, v in by_name(load(root / "one" / f"state_{STEPS}_p0.npz")).items()}
    assert one.keys() == two.keys()
    diff = {k: float(np.max(np.abs(two[k][0] - one[k]))) for k in one}
    worst = max(diff, key=diff.get)
    print(
        f"max |state(2 processes x 2 devices) - state(1 process x 4 devices)| = {diff[worst]:.3g} ({worst})"
    )
    assert diff[worst] < 1e-5
    two_train, one_train = read_metrics(root / "two", "train"), read_metrics(root / "one", "train")
    for a, b in zip(two_train, one_train[:STEPS], strict=True):
        assert a["step"] == b["step"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    # And one device (this test process's): the same steps, summed in another order.
    main_in_process(main_flags(root / "single", cache, STEPS))
    for a, b in zip(read_metrics(root / "single", "train"), one_train[:STEPS], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)


def test_only_process_zero_writes_and_logs(runs):
    root, _ = runs
    two = root / "two"
    records = read_metrics(two)
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3]  # one writer, not two
    assert [r["step"] for r in records if r["kind"] == "eval"] == [STEPS]
    csvs = sorted(p.name for p in (two / "predictions" / str(STEPS)).glob("*.csv"))
    assert csvs == ["dev_1.csv", "dev_2.csv"]
    assert (two / "config.json").is_file() and (two / "eval.json").is_file()
    assert len(list((two / "tensorboard").iterdir())) == 1
    # Every process saved its own input position into the shared checkpoint.
    data = sorted(p.name for p in (two / "checkpoints" / str(STEPS) / "data").glob("process_*"))
    assert data == ["process_0-of-2.json", "process_1-of-2.json"]
    assert "devices 4 x cpu over 2 process(es)" in (two / "log.txt").read_text()  # the detail: in the log
    assert f"visual in {two}:" in (root / "p0.log").read_text()  # the run's header: on one console
    assert "visual in" not in (root / "p1.log").read_text() and (two / "log.1.txt").is_file()


def test_two_process_checkpoint_restores_and_resumes_in_one_process(runs):
    import shutil

    import jax

    from pkd_jax.workdir.checkpoints import Checkpointer

    root, cache = runs
    # Read back onto this (single) process's first device, with no model to shape it.
    checkpointer = Checkpointer(root / "two" / "checkpoints", async_save=False)
    restored = checkpointer.restore_tree(STEPS, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    checkpointer.close()
    saved = {k: v[0] for k, v in by_name(load(root / f"state_{STEPS}_p0.npz")).items()}
    variables = {"params": restored["params"], "batch_stats": restored["batch_stats"]}
    got = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(variables)}
    assert got.keys() == saved.keys()
    for name, value in saved.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)

    # The same command in one process with one device, one step further: it resumes from the
    # 2-process checkpoint, restarts the input stream at step 3 (the saved positions are the two
    # processes' shards) and takes the same fourth step as the 4-device run.
    resumed = root / "resumed"
    shutil.copytree(root / "two", resumed)
    proc = start_worker(resumed, main_flags(resumed, cache, STEPS + 1), 1, root / "resumed.log")
    finish({"resumed": (proc, root / "resumed.log")})
    assert "Resumed from step 3" in (resumed / "log.txt").read_text()
    assert "steps 3 -> 4 on 1 cpu device(s)" in (root / "resumed.log").read_text()
    assert [r["step"] for r in read_metrics(resumed, "train")] == [1, 2, 3, 4]
    fourth, reference = read_metrics(resumed, "train")[-1], read_metrics(root / "one", "train")[-1]
    assert reference["step"] == fourth["step"] == STEPS + 1
    assert fourth["loss"] == pytest.approx(reference["loss"], rel=1e-5)
    state = {k: v[0] for k, v in by_name(load(resumed / f"state_{STEPS + 1}_p0.npz")).items()}
    one = {k: v[0] for k, v in by_name(load(root / "one" / f"state_{STEPS + 1}_p0.npz")).items()}
    assert max(float(np.max(np.abs(state[k] - one[k]))) for k in one) < 1e-5


def test_a_held_workdir_stops_every_process_of_a_two_process_job(runs):
    root, cache = runs
    busy = root / "busy"
    code = (
        "import time; from pkd_jax.workdir.lock import WorkdirLock;"
        f"lock = WorkdirLock({str(busy)!r}); print('held', flush=True); time.sleep(300)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        port = free_port()
        procs = {}
        for pid in range(2):
            distributed = [
                f"--coordinator_address=localhost:{port}",
                "--num_processes=2",
                f"--process_id={pid}",
            ]
            log = root / f"busy{pid}.log"
            procs[pid] = (start_worker(root, [*main_flags(busy, cache, STEPS), *distributed], 2, log), log)
        for proc, log in procs.values():
            assert proc.wait(timeout=180) != 0, log.read_text()[-2000:]
            assert "WorkdirInUseError" in log.read_text(), log.read_text()[-2000:]
        assert f"pid {holder.pid} on host" in procs[0][1].read_text()
        assert "process 0 names it" in procs[1][1].read_text()
        # Nothing written but each process's log of its refused start.
        assert sorted(p.name for p in busy.iterdir()) == ["log.1.txt", "log.txt", "train.lock"]
        assert "Started: pkd_jax.main" in (busy / "log.txt").read_text()
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
def init_calls(monkeypatch):
    """Records `jax.distributed.initialize` calls instead of making them; starts from a clean environment."""
    import jax

    for name in list(os.environ):
        if name.startswith(("SLURM_", "JAX_COORDINATOR", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")):
            monkeypatch.delenv(name)
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
    return calls


def test_distributed_setup_from_flags_environment_and_slurm(init_calls, monkeypatch):
    from pkd_jax.train.sharding import maybe_initialize_distributed

    assert not maybe_initialize_distributed()  # nothing describes a job: single process
    assert not maybe_initialize_distributed("h:1", num_processes=1, process_id=0)
    assert maybe_initialize_distributed("h:1", num_processes=2, process_id=1, local_device_ids=[0, 1])
    assert init_calls[-1] == {
        "coordinator_address": "h:1", "num_processes": 2, "process_id": 1, "local_device_ids": [0, 1],
    }  # fmt: skip

    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "host0:5000")
    with pytest.raises(ValueError, match="--num_processes and --process_id"):
        maybe_initialize_distributed()
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    assert maybe_initialize_distributed(process_id=2)  # a flag wins over the environment
    assert init_calls[-1]["coordinator_address"] == "host0:5000"
    assert (init_calls[-1]["num_processes"], init_calls[-1]["process_id"]) == (4, 2)

    # Inside `srun`: the rest comes from SLURM, read by JAX itself.
    monkeypatch.delenv("JAX_NUM_PROCESSES")
    monkeypatch.delenv("JAX_PROCESS_ID")
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2", "SLURM_PROCID": "1"}
    for name, value in {**slurm, "SLURM_LOCALID": "0", "SLURM_STEP_NUM_TASKS": "2"}.items():
        monkeypatch.setenv(name, value)
    assert maybe_initialize_distributed()
    assert init_calls[-1] == {
        "coordinator_address": "host0:5000", "num_processes": None, "process_id": None, "local_device_ids": None,
    }  # fmt: skip
    # The batch script itself is a one-task step of the allocation: it stays single-process.
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")
    calls = len(init_calls)
    assert not maybe_initialize_distributed()
    assert len(init_calls) == calls
