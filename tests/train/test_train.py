"""The training system end to end on a tiny cache: main entry point, resume, devices, guards."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from absl import flags

from pkd_jax.train import loop, setup
from pkd_jax.workdir.metric_writer import read_metrics
from tests.fake_cache import write_fake_cache

REPO = Path(__file__).resolve().parents[2]
STEPS = 6


def run_main(stage: str, workdir: Path, cache: Path, *overrides: str) -> None:
    """`python -m pkd_jax.main` on the tiny config of `stage` in this process."""
    args = [
        f"--config={REPO / 'configs' / f'recola_{stage}.py'}:tiny",
        f"--workdir={workdir}",
        f"--config.data.cache={cache}",
        f"--config.train.num_steps={STEPS}",
        "--config.train.log_every=3",
        f"--config.train.eval_every={STEPS}",
        "--config.train.checkpoint_every=3",
        "--config.data.eval_videos_per_batch=2",
        *overrides,
    ]
    main_in_process(args)


def main_in_process(args: list[str]) -> None:
    """`python -m pkd_jax.main *args` in this process (absl flags parsed afresh)."""
    from pkd_jax import main as entry

    argv = ["pkd_jax.main", *args]
    saved, sys.argv = sys.argv, argv  # config_flags reads the overrides from sys.argv
    try:
        flags.FLAGS.unparse_flags()
        for name in [n for n in flags.FLAGS if n.startswith("config.")]:
            delattr(flags.FLAGS, name)  # config_flags defines the overrides anew on every parse
        entry.main(flags.FLAGS(argv))
    finally:
        sys.argv = saved


def train_losses(workdir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(workdir, "train")]


def test_teacher_writes_checkpoints_metrics_and_predictions(teacher_dir):
    # keep_latest=1 and keep_best=1: step 3 was replaced by step 6, the latest and the only scored one.
    assert sorted(p.name for p in (teacher_dir / "checkpoints").iterdir() if p.name.isdigit()) == ["6"]
    config = json.loads((teacher_dir / "config.json").read_text())
    assert config["stage"] == "teacher"
    evals = read_metrics(teacher_dir, "eval")
    assert [r["step"] for r in evals] == [STEPS]
    assert np.isfinite(evals[0]["raw/mean_over_videos/arousal"])
    assert len(train_losses(teacher_dir)) == 2 and all(np.isfinite(train_losses(teacher_dir)))
    csvs = sorted((teacher_dir / "predictions" / str(STEPS)).glob("*.csv"))
    assert [p.stem for p in csvs] == ["dev_1", "dev_2"]
    assert len(csvs[0].read_text().splitlines()) == 61  # header + every frame
    assert list((teacher_dir / "tensorboard").iterdir())
    result = json.loads((teacher_dir / "eval.json").read_text())
    assert result["raw"]["postprocessing"] == "raw" and "postprocessed" not in result


def test_cached_teacher_outputs_equal_online_teacher_outputs(cache, teacher_dir):
    import jax

    from configs import recola_student
    from pkd_jax.data.cache import Cache
    from pkd_jax.data.pipeline import PipelineConfig, train_dataset
    from pkd_jax.precompute.teacher_cache import compute_teacher_cache
    from pkd_jax.train import sharding
    from pkd_jax.train.steps import teacher_outputs
    from pkd_jax.workdir.trained import load_teacher

    config = recola_student.get_config("tiny")
    config.teacher.workdir = str(teacher_dir)
    teacher, variables, _ = load_teacher(config, sharding.make_mesh())
    opened = Cache(cache)
    cached = compute_teacher_cache(
        teacher, variables, opened, clip_frames=config.data.clip_frames, missing_face="retain",
        audio_window_s=config.data.audio_window_s,
    )  # fmt: skip
    pipeline = PipelineConfig(clip_frames=config.data.clip_frames, batch_size=4, seed=5)
    batch = train_dataset(opened, pipeline, extra_arrays=cached)[0]
    pred, emb = jax.jit(lambda v, b: teacher_outputs(teacher, v, b, np.float32))(
        variables, {"frames": batch["frames"], "audio": batch["audio"]}
    )
    np.testing.assert_allclose(batch["teacher_pred"], pred, atol=1e-4)
    np.testing.assert_allclose(batch["teacher_emb"], emb, atol=1e-4)


def test_visual_baseline_resumes_exactly_and_is_deterministic(tmp_path, cache):
    run_main("visual", tmp_path / "full", cache)
    run_main("visual", tmp_path / "again", cache)
    assert train_losses(tmp_path / "full") == train_losses(tmp_path / "again")
    # Interrupted after the step-3 checkpoint, then the same command again.
    run_main("visual", tmp_path / "resumed", cache, "--config.train.num_steps=3")
    run_main("visual", tmp_path / "resumed", cache)
    assert train_losses(tmp_path / "resumed") == pytest.approx(train_losses(tmp_path / "full"), rel=1e-6)
    full_eval = read_metrics(tmp_path / "full", "eval")[-1]
    resumed_eval = read_metrics(tmp_path / "resumed", "eval")[-1]
    assert resumed_eval["mean_ccc"] == pytest.approx(full_eval["mean_ccc"], rel=1e-6)


def test_a_population_of_four_takes_a_device_per_member_and_matches_a_single_run(tmp_path, cache):
    # Data parallelism over devices (1 process x 4 devices against 2 x 2 and against 1 device) is
    # tests/train/test_multihost.py; here a population's member axis is laid over the devices.
    args = (
        "--config.train.num_steps=3",
        "--config.train.eval_every=100",
        "--config.eval.save_predictions=False",
    )
    run_main("visual", tmp_path / "d1", cache, *args)
    code = (
        "import sys; sys.path.insert(0, {repo!r});"
        "from tests.train.test_train import run_main; from pathlib import Path;"
        # A population of 4 on the 4 devices: a member per device, no communication in the step.
        "run_main('visual', Path({pop!r}), Path({cache!r}), '--config.train.population=4', *{args!r})"
    ).format(repo=str(REPO), pop=str(tmp_path / "p4"), cache=str(cache), args=args)
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
        JAX_COMPILATION_CACHE_DIR=str(REPO / ".pytest_cache" / "jax_compilation"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (tmp_path / "p4" / "log.txt").read_text()
    assert "layout 'members'" in log and "devices 4 x cpu" in log
    assert train_losses(tmp_path / "p4" / "seed_0") == pytest.approx(train_losses(tmp_path / "d1"), rel=1e-4)


def test_pretrained_trunk_weights_are_loaded_and_checked(tmp_path):
    import jax

    from configs import recola_visual
    from pkd_jax.config import build

    config = recola_visual.get_config("tiny")
    model = build.build_student(config)
    batch = {"frames": np.zeros((1, 2, 32, 32, 3), np.uint8)}
    variables = build.init_variables(model, batch, seed=0)
    conv = variables["params"]["visual_cnn"]["features_0"]
    state = {  # torchvision layout: [out, in, kh, kw]; no fc, as in the FER2013 checkpoint
        "features.0.weight": np.full(np.transpose(conv["kernel"], (3, 2, 0, 1)).shape, 0.5, np.float32),
        "features.0.bias": np.full(conv["bias"].shape, 0.25, np.float32),
    }
    np.savez(tmp_path / "partial.npz", **state)
    config.unlock()
    config.pretrained.visual_cnn = str(tmp_path / "partial.npz")
    with pytest.raises(ValueError, match="features"):  # every conv must be there, not just the first
        setup.load_pretrained(config, variables)
    full = {}
    for name, layer in variables["params"]["visual_cnn"].items():
        if not name.startswith("features_"):
            continue
        index = name.split("_")[1]
        if "kernel" in layer:
            full[f"features.{index}.weight"] = np.transpose(np.full_like(layer["kernel"], 0.5), (3, 2, 0, 1))
            full[f"features.{index}.bias"] = np.full_like(layer["bias"], 0.25)
        else:
            stats = variables["batch_stats"]["visual_cnn"][name]
            full[f"features.{index}.weight"] = np.ones_like(layer["scale"])
            full[f"features.{index}.bias"] = np.zeros_like(layer["bias"])
            full[f"features.{index}.running_mean"] = np.full_like(stats["mean"], 0.1)
            full[f"features.{index}.running_var"] = np.full_like(stats["var"], 2.0)
    np.savez(tmp_path / "fer.npz", **full)
    config.pretrained.visual_cnn = str(tmp_path / "fer.npz")
    loaded = setup.load_pretrained(config, variables)
    assert np.all(np.asarray(loaded["params"]["visual_cnn"]["features_0"]["kernel"]) == 0.5)
    assert np.all(np.asarray(loaded["batch_stats"]["visual_cnn"]["features_1"]["var"]) == 2.0)
    fc_before = np.asarray(variables["params"]["visual_cnn"]["fc"]["kernel"])
    np.testing.assert_array_equal(loaded["params"]["visual_cnn"]["fc"]["kernel"], fc_before)  # kept fresh
    assert jax.tree.structure(loaded) == jax.tree.structure(variables)


def test_nan_labels_stop_training_naming_step_and_clips(tmp_path):
    cache = write_fake_cache(tmp_path / "cache", n_train=1, n_dev=1)
    labels = np.load(cache / "videos" / "train_1" / "labels.npy")
    labels[:] = np.nan
    np.save(cache / "videos" / "train_1" / "labels.npy", labels)
    with pytest.raises(loop.NonFiniteLossError, match=r"non-finite loss at step 1; clips .*train_1@"):
        run_main("visual", tmp_path / "run", cache)


def test_mistyped_config_key_is_an_error_naming_it(tmp_path, cache):
    with pytest.raises(Exception, match="lr_hed"):
        run_main("visual", tmp_path / "run", cache, "--config.optim.lr_hed=1e-3")


def test_missing_teacher_and_missing_data_root_are_clear_errors(tmp_path, cache):
    with pytest.raises(FileNotFoundError, match="teacher not found"):
        run_main("student", tmp_path / "s", cache, f"--config.teacher.workdir={tmp_path / 'nowhere'}")
    from configs import recola_visual

    config = recola_visual.get_config()
    with pytest.raises(ValueError, match=r"data\.root is not set.*synthetic"):
        loop.run(config, tmp_path / "v")


def test_sigterm_saves_a_checkpoint_and_a_second_writer_is_refused(tmp_path, cache):
    import signal
    import time

    workdir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "pkd_jax.main", f"--config={REPO / 'configs' / 'recola_visual.py'}:tiny",
        f"--workdir={workdir}", f"--config.data.cache={cache}", "--config.train.num_steps=100000",
        "--config.train.log_every=2", "--config.train.eval_every=100000", "--config.train.checkpoint_every=100000",
    ]  # fmt: skip
    env = dict(
        os.environ,
        JAX_COMPILATION_CACHE_DIR=str(REPO / ".pytest_cache" / "jax_compilation"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
    )
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + 240
    while not read_metrics(workdir, "train") and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert read_metrics(workdir, "train"), "training never logged"
    # A second writer, with another seed, is refused while the first trains, and harms nothing.
    from pkd_jax.workdir.lock import WorkdirInUseError

    with pytest.raises(WorkdirInUseError, match=rf"in use by another run \(pid {proc.pid} on host"):
        run_main("visual", workdir, cache, "--config.seed=1")
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output[-3000:]
    assert "Stopping on signal" in output
    # A quiet console (the run's header, warnings); the log file has everything, orbax's INFO lines too.
    assert f"visual in {workdir}:" in output and "_NonBlockingMetadataStore" not in output
    assert "Unable to initialize backend" not in output and "checkpoint_manager.py" not in output
    log = (workdir / "log.txt").read_text()
    assert "Stopping on signal" in log and "checkpoint_manager.py" in log and f"visual in {workdir}:" in log
    steps = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(steps) == 1 and steps[0] >= 2
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == [str(steps[0])]  # no tmp dirs
    assert json.loads((workdir / "config.json").read_text())["seed"] == 0
    logged = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert logged and len(logged) == len(set(logged))  # the file itself, not read_metrics's view
