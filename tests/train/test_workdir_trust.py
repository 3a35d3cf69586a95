"""A workdir is trusted: one writer at a time, a config that cannot drift from its checkpoints, damaged
checkpoints named (and skipped when an older one exists), every enumerated config value checked."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pkd_jax.data.cache import CacheError
from pkd_jax.train import loop
from pkd_jax.workdir.checkpoints import CheckpointDamagedError
from pkd_jax.workdir.config_record import ConfigChangeError, read_config
from pkd_jax.workdir.lock import LOCK_NAME, WorkdirInUseError, WorkdirLock
from pkd_jax.workdir.metric_writer import read_metrics

REPO = Path(__file__).resolve().parents[2]
STEPS = 6


def visual_config(cache: Path, **train):
    from configs import recola_visual

    config = recola_visual.get_config("tiny")
    config.unlock()
    config.data.cache = str(cache)
    config.data.eval_videos_per_batch = 2
    config.train.update(
        {
            "num_steps": STEPS,
            "log_every": 3,
            "eval_every": 3,
            "checkpoint_every": 3,
            "keep_latest": 2,
            **train,
        }
    )
    return config


@pytest.fixture(scope="module")
def visual_run(tmp_path_factory, cache):
    """A finished tiny visual run with checkpoints at steps 3 and 6."""
    workdir = tmp_path_factory.mktemp("visual") / "run"
    loop.run(visual_config(cache), workdir)
    return workdir


def copy_run(visual_run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(visual_run, out, ignore=shutil.ignore_patterns(LOCK_NAME))
    return out


def hold_lock_in_subprocess(workdir: Path) -> subprocess.Popen:
    code = (
        "import sys, time; from pkd_jax.workdir.lock import WorkdirLock;"
        f"lock = WorkdirLock({str(workdir)!r}); print('held', flush=True); time.sleep(120)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_holder_and_writes_nothing(tmp_path, cache):
    workdir = tmp_path / "run"
    holder = hold_lock_in_subprocess(workdir)
    try:
        with pytest.raises(WorkdirInUseError, match=rf"in use by another run \(pid {holder.pid} on host"):
            WorkdirLock(workdir)
        with pytest.raises(WorkdirInUseError, match=str(holder.pid)):
            loop.run(visual_config(cache), workdir)
        assert sorted(p.name for p in workdir.iterdir()) == [LOCK_NAME]  # no config.json, no checkpoints
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_leaves_a_stale_lock_that_the_next_run_takes_over(tmp_path, caplog):
    workdir = tmp_path / "run"
    holder = hold_lock_in_subprocess(workdir)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert json.loads((workdir / LOCK_NAME).read_text())["pid"] == holder.pid  # record left behind
    with caplog.at_level("WARNING"):
        lock = WorkdirLock(workdir)
    assert f"pid {holder.pid}" in caplog.text and "stale" in caplog.text
    assert json.loads((workdir / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert (workdir / LOCK_NAME).read_text() == ""  # released: an empty record, the file stays
    WorkdirLock(workdir).release()


def test_a_student_may_not_train_in_its_teachers_workdir(teacher_dir, cache):
    from configs import recola_student

    before = (teacher_dir / "config.json").read_bytes()
    config = recola_student.get_config("tiny")
    config.unlock()
    config.data.cache, config.teacher.workdir = str(cache), str(teacher_dir)
    with pytest.raises(ConfigChangeError, match="is the teacher's workdir"):
        loop.run(config, teacher_dir)
    assert (teacher_dir / "config.json").read_bytes() == before


def test_resuming_another_network_is_refused_listing_each_field(visual_run, tmp_path, cache):
    workdir = copy_run(visual_run, tmp_path)
    before = (workdir / "config.json").read_bytes()
    config = visual_config(cache)
    config.model.rnn_hidden, config.stage = 16, "student"
    config.teacher.workdir = str(tmp_path / "teacher")
    with pytest.raises(ConfigChangeError, match=r"model.rnn_hidden: 32 -> 16.*stage: 'visual' -> 'student'"):
        loop.run(config, workdir)
    assert (workdir / "config.json").read_bytes() == before


def test_changed_training_fields_need_the_override_and_are_recorded_as_amendments(
    visual_run, tmp_path, cache
):
    workdir = copy_run(visual_run, tmp_path)
    before = (workdir / "config.json").read_bytes()
    config = visual_config(cache, num_steps=STEPS + 3)
    config.optim.lr_head, config.data.clip_frames = 5e-4, 3
    with pytest.raises(ConfigChangeError, match=r"data.clip_frames: 4 -> 3; optim.lr_head: 0.001 -> 0.0005"):
        loop.run(config, workdir)
    assert not (workdir / "config_amendments.jsonl").exists()
    loop.run(config, workdir, allow_config_change=True)
    assert (workdir / "config.json").read_bytes() == before  # history is not rewritten
    (amendment,) = [
        json.loads(line) for line in (workdir / "config_amendments.jsonl").read_text().splitlines()
    ]
    assert amendment["step"] == STEPS
    assert amendment["changes"] == {
        "data.clip_frames": [4, 3], "optim.lr_head": [0.001, 0.0005], "train.num_steps": [STEPS, STEPS + 3],
    }  # fmt: skip
    now = read_config(workdir / "config.json")
    assert (now.optim.lr_head, now.data.clip_frames, now.train.num_steps) == (5e-4, 3, STEPS + 3)
    # The same config again is no change; bookkeeping alone needs no override.
    config.train.eval_every = 9
    loop.run(config, workdir)
    assert json.loads((workdir / "config_amendments.jsonl").read_text().splitlines()[-1])["changes"] == {
        "train.eval_every": [3, 9]
    }


def test_a_checkpoint_of_another_network_names_the_parameters(visual_run, tmp_path, cache):
    workdir = copy_run(visual_run, tmp_path)
    recorded = json.loads((workdir / "config.json").read_text())
    recorded["model"]["rnn_hidden"] = 16  # as if config.json and checkpoints had parted ways
    (workdir / "config.json").write_text(json.dumps(recorded))
    config = visual_config(cache)
    config.model.rnn_hidden = 16
    with pytest.raises(
        ValueError,
        match=r"checkpoints/6/state does not match .*\['temporal'\]\['hidden_kernel'\]: expected \(16, 48\), found \(32, 96\)",
    ):
        loop.run(config, workdir)


def _truncate_largest_array(step_dir: Path) -> None:
    files = sorted((step_dir / "state").rglob("d/*"), key=lambda p: p.stat().st_size)
    with open(files[-1], "r+b") as f:
        f.truncate(100)


CORRUPTIONS = {
    "truncated_array": _truncate_largest_array,
    "missing_metadata": lambda d: (d / "state" / "_METADATA").unlink(),
    "empty_manifest": lambda d: [p.write_bytes(b"") for p in (d / "state").rglob("manifest.ocdbt")],
    "garbage_iterator": lambda d: (d / "data" / "process_0-of-1.json").write_text("{garbage"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_a_damaged_checkpoint_is_named_and_the_previous_one_resumes_exactly(
    visual_run, tmp_path, cache, kind, caplog
):
    workdir = copy_run(visual_run, tmp_path)
    CORRUPTIONS[kind](workdir / "checkpoints" / str(STEPS))
    with caplog.at_level("WARNING"):
        loop.run(visual_config(cache), workdir)
    assert f"checkpoints/{STEPS} is damaged" in caplog.text and "trying step 3" in caplog.text
    assert (workdir / "checkpoints_damaged" / str(STEPS)).is_dir()
    # Steps 4-6 were trained again from step 3: the same losses, each step logged once.
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert sorted((r["kind"], r["step"]) for r in lines) == [
        ("eval", 3),
        ("eval", 6),
        ("train", 3),
        ("train", 6),
    ]
    assert [r["loss"] for r in read_metrics(workdir, "train")] == pytest.approx(
        [r["loss"] for r in read_metrics(visual_run, "train")], rel=1e-6
    )


def test_the_only_checkpoint_damaged_says_what_to_delete(visual_run, tmp_path, cache):
    workdir = copy_run(visual_run, tmp_path)
    shutil.rmtree(workdir / "checkpoints" / "3")
    _truncate_largest_array(workdir / "checkpoints" / str(STEPS))
    with pytest.raises(CheckpointDamagedError, match=rf"checkpoints/{STEPS} is damaged .*rm -r"):
        loop.run(visual_config(cache, num_steps=STEPS + 3), workdir)


def test_duplicate_metric_steps_are_read_once(tmp_path):
    records = [{"step": 3, "kind": "train", "loss": 1.0}, {"step": 6, "kind": "train", "loss": 2.0}]
    records += [{"step": 6, "kind": "train", "loss": 3.0}, {"step": 6, "kind": "eval", "mean_ccc": 0.1}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert [r["loss"] for r in read_metrics(tmp_path, "train")] == [1.0, 3.0]
    assert len(read_metrics(tmp_path)) == 3


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("stage", "Teacher", r"config.stage='Teacher': choose one of \['teacher', 'visual', 'student'\]"),
        ("stage", "foo", r"config.stage='foo'"),
        ("teacher.mode", "cache", r"config.teacher.mode='cache'"),
        ("loss.gate", "papr", r"config.loss.gate='papr'"),
        ("model.rnn", "GRU", r"config.model.rnn='GRU'"),
        ("train.num_steps", -1, r"config.train.num_steps=-1: must be >= 1"),
        ("data.batch_size", 0, r"config.data.batch_size=0: must be >= 1"),
        ("targets", ("valence", "joy"), r"config.targets=\('valence', 'joy'\)"),
        (
            "data.face_align",
            "tight",
            r"config.data.face_align='tight': choose one of \['none', 'landmarks'\]",
        ),
        ("data.face_align", "landmarks", r"face_align='landmarks' needs a detector that gives landmarks"),
        ("data.face_detector", "mylab:Detector", r"config.data.face_detector: .* looks like an import path"),
    ],
)
def test_enumerated_and_counted_fields_are_checked_before_anything_is_written(
    tmp_path, cache, field, value, message
):
    config = visual_config(cache)
    *parents, name = field.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[name] = value
    with pytest.raises(ValueError, match=message):
        loop.run(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_every_enumerated_field_exists_and_its_default_is_allowed():
    from pkd_jax import defaults
    from pkd_jax.config import check as config_check
    from pkd_jax.data.corpus_to_cache import DATASETS

    assert set(defaults.DATASETS) == set(DATASETS)
    for stage in defaults.STAGES:
        for dataset in ("recola", "affwild2"):
            config = defaults.get_config(stage, dataset)
            config_check.check_values(config)  # the defaults pass
            for field in config_check._choices():
                config_check._get(config, field)  # every checked field is a real one


def test_a_cache_of_another_face_size_is_an_error_not_a_substitute(tmp_path, cache):
    config = visual_config(cache)
    config.data.face_size = 48
    with pytest.raises(CacheError, match=r"built with face_size=32, the config asks data.face_size=48"):
        loop.run(config, tmp_path / "run")


def test_the_command_line_reports_a_mistake_in_one_line(tmp_path, cache):
    cmd = [
        sys.executable, "-m", "pkd_jax.main", f"--config={REPO / 'configs' / 'recola_visual.py'}:tiny",
        f"--workdir={tmp_path / 'run'}", f"--config.data.cache={cache}", "--config.stage=Teacher",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: invalid config: config.stage='Teacher'")
    assert "Traceback" not in done.stderr
    verbose = subprocess.run([*cmd, "--verbose"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr
