"""Data throughput on a synthetic corpus: preprocessing frames/s (whole and face detection) and the
training input pipeline's frames/s (student clips without audio, teacher clips with audio).

    python benchmarks/preprocess_bench.py [--seconds=20] [--frame_size=256] [--redetect_every=10] [--json]

Generates the corpus on first use (kept under --corpus_root for later runs), then preprocesses it into a
fresh temporary cache with one worker, OpenCV limited to one thread, so the numbers are per core. Library
imports and the detector are warmed up first; they are one-off costs per worker process, not per frame.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from absl import app, flags

from pkd_jax.data import synthetic
from pkd_jax.data.audio import log_mel
from pkd_jax.data.preprocess import PreprocessConfig, preprocess_corpus

_ROOT = flags.DEFINE_string(
    "corpus_root", str(Path(tempfile.gettempdir()) / "pkd_jax_bench"), "Corpus cache."
)
_TRAIN = flags.DEFINE_integer("train", 2, "Training recordings.")
_DEV = flags.DEFINE_integer("dev", 1, "Development recordings.")
_SECONDS = flags.DEFINE_float("seconds", 20.0, "Length of each recording.")
_FRAME = flags.DEFINE_integer("frame_size", 256, "Synthetic frame width and height.")
_FACE = flags.DEFINE_integer("face_size", 112, "Face crop size.")
_REDETECT = flags.DEFINE_integer("redetect_every", PreprocessConfig.redetect_every, "Full detection period.")
_DETECT_WIDTH = flags.DEFINE_integer("detect_width", PreprocessConfig.detect_width, "Detection width.")
_JSON = flags.DEFINE_boolean("json", False, "Print the results as JSON instead of a table.")


def corpus(root: Path) -> Path:
    """The benchmark corpus, generated when missing."""
    name = f"synthetic_{_TRAIN.value}x{_DEV.value}_{_SECONDS.value:g}s_{_FRAME.value}px"
    path = root / name
    if not (path / "synthetic.json").is_file():
        config = synthetic.SyntheticConfig(frame_width=_FRAME.value, frame_height=_FRAME.value)
        synthetic.generate_corpus(
            path, _TRAIN.value, _DEV.value, _SECONDS.value, 0, config=config, progress=False
        )
    return path


def input_pipeline(cache_dir: Path, *, with_audio: bool, batches: int = 40) -> float:
    """Frames/s of the training input pipeline (batch 8 clips x 5 frames, the loop's read options)."""
    from pkd_jax.data.cache import Cache
    from pkd_jax.data.pipeline import PipelineConfig, train_dataset
    from pkd_jax.train.loop import grain_read_options

    config = PipelineConfig(clip_frames=5, batch_size=8, with_audio=with_audio, seed=0)
    iterator = iter(train_dataset(Cache(cache_dir), config).to_iter_dataset(grain_read_options()))
    for _ in range(5):  # warm-up: thread start, first memory-map faults
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * config.batch_size * config.clip_frames / (time.perf_counter() - start)


def run(src: Path, config: PreprocessConfig) -> dict[str, float]:
    """Preprocesses `src` once, times the input pipeline on the result, and returns the measurements."""
    out = Path(tempfile.mkdtemp(prefix="pkd_jax_bench_cache_"))
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        manifest = preprocess_corpus("synthetic", src, out, config, workers=1, progress=False, verbose=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        pipeline = {
            "pipeline_student_frames_per_s": input_pipeline(out, with_audio=False),
            "pipeline_teacher_frames_per_s": input_pipeline(out, with_audio=True),
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)
    videos = manifest["videos"].values()
    failed = [v["video_id"] for v in videos if v["status"] != "ok"]
    if failed:
        raise RuntimeError(f"preprocessing failed for {failed}: {manifest['videos']}")
    frames = sum(v["num_frames"] for v in videos)
    face = sum(v["timing"]["face_seconds"] for v in videos)
    per_video = sum(v["timing"]["seconds"] for v in videos)
    found = sum(v["face_found_fraction"] * v["num_frames"] for v in videos) / frames
    return {
        "videos": len(manifest["videos"]),
        "frames": frames,
        "wall_s": wall,
        "cpu_s": cpu,
        "frames_per_s": frames / wall,
        "frames_per_cpu_s": frames / cpu,
        "face_detection_s": face,
        "face_detection_share": face / per_video,
        "face_detection_frames_per_s": frames / face,
        "face_found_fraction": found,
        **pipeline,
    }


def main(argv: Sequence[str]) -> None:
    del argv
    cv2.setNumThreads(1)  # Per-core numbers; workers run with one OpenCV thread too.
    src = corpus(Path(_ROOT.value))
    config = PreprocessConfig(
        face_size=_FACE.value, redetect_every=_REDETECT.value, detect_width=_DETECT_WIDTH.value
    )
    # Warm-up: librosa's lazy imports and the cascade load take seconds once per process.
    log_mel(
        np.zeros(640, np.float32),
        sample_rate=16000,
        n_fft=512,
        hop=160,
        n_mels=64,
        fmin=0,
        fmax=8000,
        log_floor=1e-6,
    )
    result = run(src, config)
    result |= {
        "frame_size": _FRAME.value,
        "redetect_every": _REDETECT.value,
        "detect_width": _DETECT_WIDTH.value,
    }
    if _JSON.value:
        print(json.dumps(result, indent=2))
        return
    rows = [
        (
            "corpus",
            f"{result['videos']} videos, {result['frames']} frames of {_FRAME.value}x{_FRAME.value} px",
        ),
        (
            "settings",
            f"face_size {_FACE.value}, detect_width {_DETECT_WIDTH.value}, redetect_every {_REDETECT.value}",
        ),
        ("wall time", f"{result['wall_s']:.2f} s ({result['cpu_s']:.2f} s CPU)"),
        (
            "pipeline",
            f"{result['frames_per_s']:.1f} frames/s ({result['frames_per_cpu_s']:.1f} per CPU-second)",
        ),
        (
            "face detection",
            f"{result['face_detection_frames_per_s']:.1f} frames/s, "
            f"{100 * result['face_detection_share']:.0f}% of the per-video time",
        ),
        ("faces found", f"{100 * result['face_found_fraction']:.1f}% of frames"),
        (
            "input pipeline",
            f"{result['pipeline_student_frames_per_s']:.0f} frames/s student clips, "
            f"{result['pipeline_teacher_frames_per_s']:.0f} frames/s teacher clips (with audio)",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    sys.stdout.flush()


if __name__ == "__main__":
    app.run(main)
