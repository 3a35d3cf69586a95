"""Data throughput: preprocessing (decode, face detection, log-mel) and the training input pipeline.

Used by `python -m pkd_jax.bench --what=preprocess|pipeline`. Both run on the config's corpus when
`data.root` names one, otherwise on a synthetic corpus generated once under `corpus_root`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from pkd_jax.config import build
from pkd_jax.data.cache import Cache
from pkd_jax.data.corpus_to_cache import preprocess_corpus
from pkd_jax.data.pipeline import PipelineConfig, train_dataset
from pkd_jax.data.preprocess_config import PreprocessConfig


def synthetic_corpus(root: str | Path, *, train: int, dev: int, seconds: float, frame_size: int) -> Path:
    """A synthetic RECOLA-layout corpus under `root`, generated on first use and reused after."""
    path = Path(root) / f"synthetic_{train}x{dev}_{seconds:g}s_{frame_size}px"
    if not (path / "synthetic.json").is_file():
        # Imported here: the generator's scipy.signal adds seconds to the start of every `pkd_jax.bench`
        # process, and the train and population benches, which import this module too, never generate.
        from pkd_jax.data import synthetic

        config = synthetic.SyntheticConfig(frame_width=frame_size, frame_height=frame_size)
        synthetic.generate_corpus(path, train, dev, seconds, 0, config=config, progress=False)
    return path


def corpus_for(
    config: ml_collections.ConfigDict, corpus_root: str | Path, **synthetic_kw: Any
) -> tuple[str, Path]:
    """(dataset, corpus directory): the config's corpus, or the synthetic stand-in."""
    if config.data.root:
        return config.data.dataset, Path(config.data.root)
    return "synthetic", synthetic_corpus(corpus_root, **synthetic_kw)


def bench_preprocess(
    dataset: str, src: Path, config: PreprocessConfig, *, workers: int = 1
) -> dict[str, Any]:
    """Preprocesses `src` into a temporary cache and reports frames/s overall and for face detection."""
    import cv2

    from pkd_jax.data.audio import log_mel

    cv2.setNumThreads(1)  # per-core numbers: workers run with one OpenCV thread too
    # librosa's lazy imports take seconds once per process; they are not a per-frame cost.
    log_mel(
        np.zeros(640, np.float32), sample_rate=16000, n_fft=512, hop=160, n_mels=64,
        fmin=0, fmax=8000, log_floor=1e-6,
    )  # fmt: skip
    out = Path(tempfile.mkdtemp(prefix="pkd_jax_bench_cache_"))
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        manifest = preprocess_corpus(
            dataset, src, out, config, workers=workers, progress=False, verbose=False
        )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        shutil.rmtree(out, ignore_errors=True)
    videos = [v for v in manifest["videos"].values() if v["status"] == "ok"]
    failed = sorted(v["video_id"] for v in manifest["videos"].values() if v["status"] != "ok")
    if not videos:
        raise RuntimeError(f"preprocessing {src} failed for every video: {failed}")
    frames = sum(v["num_frames"] for v in videos)
    face_s = sum(v["timing"]["face_seconds"] for v in videos)
    video_s = sum(v["timing"]["seconds"] for v in videos)
    return {
        "what": "preprocess",
        "corpus": str(src),
        "videos": len(videos),
        "failed_videos": failed,
        "frames": frames,
        "workers": workers,
        "wall_s": wall,
        # With workers > 1 the work happens in child processes, so only wall-clock rates are meaningful.
        "cpu_s": cpu if workers == 1 else None,
        "frames_per_s": frames / wall,
        "frames_per_cpu_s": frames / cpu if workers == 1 and cpu else None,
        "face_detection_frames_per_s": frames / face_s if face_s else None,
        "face_detection_share": face_s / video_s if video_s else None,
        "face_found_fraction": sum(v["face_found_fraction"] * v["num_frames"] for v in videos) / frames,
    }


def bench_pipeline(
    cache: Cache, config: PipelineConfig, *, batches: int = 40, warmup: int = 5
) -> dict[str, Any]:
    """Frames/s of the training input pipeline over `batches` batches after `warmup` (threads, page faults)."""
    from pkd_jax.train.setup import grain_read_options  # the training loop's read options

    iterator = iter(train_dataset(cache, config).to_iter_dataset(grain_read_options()))
    for _ in range(warmup):
        next(iterator)
    times = []
    for _ in range(batches):
        start = time.perf_counter()
        next(iterator)
        times.append(time.perf_counter() - start)
    frames = config.batch_size * config.clip_frames * (config.subsequences or 1)
    total = sum(times)
    return {
        "batches": batches,
        "batch_clips": config.batch_size,
        "frames_per_batch": frames,
        "with_audio": config.with_audio,
        "batch_ms_median": 1e3 * sorted(times)[len(times) // 2],
        "frames_per_s": batches * frames / total,
    }


def data_benchmark(config: ml_collections.ConfigDict, what: str, **kw: Any) -> list[dict[str, Any]]:
    """`--what=preprocess|pipeline` on the config's corpus, or on a synthetic one under `corpus_root`."""

    dataset, src = corpus_for(
        config, kw["corpus_root"], train=kw["corpus_train"], dev=kw["corpus_dev"],
        seconds=kw["corpus_seconds"], frame_size=kw["corpus_frame_size"],
    )  # fmt: skip
    if what == "preprocess":
        result = bench_preprocess(dataset, src, build.preprocess_config(config), workers=kw["workers"])
        return [result]
    from pkd_jax.train.feature_cache import open_feature_cache

    c = ml_collections.ConfigDict(config.to_dict())
    c.data.dataset, c.data.root = dataset, str(src)
    cache = open_feature_cache(c)
    results = []
    for with_audio in (False, True):
        pipeline = build.pipeline_config(
            config, batch_size=config.data.batch_size, with_audio=with_audio, train=True
        )
        r = bench_pipeline(cache, pipeline, batches=kw["batches"])
        results.append(
            {
                "what": "pipeline",
                "kind": "teacher" if with_audio else "student",
                "cache": str(cache.root),
                **r,
            }
        )
    return results


def format_data_table(results: list[dict[str, Any]]) -> str:
    """`--what=preprocess|pipeline` results, one line each."""
    rows = []
    for r in results:
        if r["what"] == "preprocess":
            per_cpu = f", {r['frames_per_cpu_s']:.1f} per CPU-second" if r["frames_per_cpu_s"] else ""
            face = r["face_detection_frames_per_s"]
            rows.append(
                f"preprocess {r['videos']} videos, {r['frames']} frames in {r['wall_s']:.1f} s: "
                f"{r['frames_per_s']:.1f} frames/s{per_cpu}; face detection {face:.1f} frames/s "
                f"({100 * r['face_detection_share']:.0f}% of the time), faces in "
                f"{100 * r['face_found_fraction']:.1f}% of frames; failed: {r['failed_videos'] or 'none'}"
            )
        else:
            rows.append(
                f"pipeline {r['kind']:8} clips ({'with' if r['with_audio'] else 'no'} audio): "
                f"{r['frames_per_s']:.0f} frames/s, median {r['batch_ms_median']:.1f} ms per batch of "
                f"{r['frames_per_batch']} frames"
            )
    return "\n".join(rows)
