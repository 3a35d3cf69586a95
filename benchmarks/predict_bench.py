"""End-to-end prediction speed and peak memory: `python -m pkd_jax.predict` on one synthetic video.

    python benchmarks/predict_bench.py --seconds=600 [--frame_size=256] [--chunk_frames=250] [--json]

Builds, on first use, a workdir with a randomly initialised student of `--config` (full RECOLA size by
default; the weights do not change the cost), and a feature-cache manifest holding preprocessing's
default settings for it to read; then generates a synthetic video of `--seconds` at 25 fps and runs the
predict CLI on it in a child process. Reported: the child's wall time (model loading and compilation
included), predict's own frames/s for the video (decoding, face detection and the network, after
loading), and the child's peak resident memory (`ru_maxrss`).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

REPO = Path(__file__).resolve().parents[1]

_ROOT = flags.DEFINE_string(
    "root", str(Path(tempfile.gettempdir()) / "pkd_jax_predict_bench"), "Work folder."
)
_CONFIG = flags.DEFINE_string("config", "recola_student", "Config module under configs/ (its student).")
_CONFIG_ARG = flags.DEFINE_string("config_arg", None, "Config argument, e.g. 'tiny'.")
_SECONDS = flags.DEFINE_float("seconds", 60.0, "Video length in seconds (25 fps).")
_FRAME = flags.DEFINE_integer("frame_size", 256, "Synthetic frame width and height.")
_CHUNK = flags.DEFINE_integer("chunk_frames", None, "Frames per step (default: the config's).")
_JSON = flags.DEFINE_boolean("json", False, "Print the result as JSON instead of text.")


def make_workdir(workdir: Path, config_name: str, config_arg: str | None, seed: int = 0) -> Path:
    """A workdir with a randomly initialised model of the config, and a manifest of face settings."""
    import importlib.util

    from pkd_jax.config import build
    from pkd_jax.data.cache import CacheWriter
    from pkd_jax.train.state import create_state, make_optimizer
    from pkd_jax.workdir.checkpoints import Checkpointer

    if (workdir / "config.json").is_file():
        return workdir
    spec = importlib.util.spec_from_file_location(config_name, REPO / "configs" / f"{config_name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # a config file of this checkout; it imports only pkd_jax
    config = module.get_config(config_arg)
    config.unlock()
    cache = workdir / "face_settings_cache"
    CacheWriter(cache, dataset="synthetic", config=build.preprocess_config(config).to_dict()).finalize([])
    config.data.cache = str(cache)
    model = build.build_student(config)
    size = config.data.face_size
    variables = build.init_variables(model, {"frames": np.zeros((1, 1, size, size, 3), np.uint8)}, seed)
    state = create_state(variables, make_optimizer(config.optim, variables["params"]), jax.random.key(seed))
    checkpointer = Checkpointer(workdir / "checkpoints", async_save=False)
    checkpointer.save(0, state)
    checkpointer.close()
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    return workdir


def make_video(folder: Path, seconds: float, frame_size: int) -> Path:
    """A synthetic recording of `seconds` at 25 fps (generated once)."""
    from pkd_jax.data import synthetic

    video_id = f"bench_{seconds:g}s_{frame_size}px"
    path = folder / "recordings_video" / f"{video_id}.mp4"
    if not path.is_file():
        config = synthetic.SyntheticConfig(frame_width=frame_size, frame_height=frame_size)
        synthetic.generate_video(folder, video_id, round(seconds * config.fps), 0, config)
    return path


def main(argv: Sequence[str]) -> None:
    del argv
    root = Path(_ROOT.value)
    name = f"{_CONFIG.value}_{_CONFIG_ARG.value or 'full'}"
    workdir = make_workdir(root / f"workdir_{name}", _CONFIG.value, _CONFIG_ARG.value)
    video = make_video(root / "videos", _SECONDS.value, _FRAME.value)
    out = root / f"out_{name}"
    command = [
        sys.executable,
        "-m",
        "pkd_jax.predict",
        f"--workdir={workdir}",
        f"--video={video}",
        f"--out={out}",
        "--overwrite",  # the benchmark's own folder: the previous measurement's outputs
    ]
    if _CHUNK.value:
        command.append(f"--chunk_frames={_CHUNK.value}")
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, check=False)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"predict failed with status {done.returncode}: {' '.join(command)}")
    summary = json.loads((out / "summary.json").read_text())
    row = summary["videos"][0]
    result = {
        "config": name,
        "video": str(video),
        "frames": row["frames"],
        "video_s": row["duration_s"],
        "chunk_frames": summary["chunk_frames"],
        "compile_s": summary["compile_s"],
        "predict_frames_per_s": row["frames_per_s"],
        "wall_s": wall,
        "end_to_end_frames_per_s": row["frames"] / wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,  # Linux: KiB
        "command": " ".join(command),
    }
    if _JSON.value:  # with the predict run's provenance (same checkout, its devices)
        print(json.dumps({**result, "provenance": summary.get("provenance")}))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value:.2f}" if isinstance(value, float) else f"{key:>24}: {value}")


if __name__ == "__main__":
    app.run(main)
