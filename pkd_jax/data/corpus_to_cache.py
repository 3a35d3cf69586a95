"""Raw corpus -> feature cache: decode, detect and crop faces, log-mel audio, align labels, write.

`preprocess_corpus` runs one job per video, in this process (`workers=1`) or in a pool of spawned worker
processes (spawn rather than fork: forking a parent that has started JAX or OpenCV threads can deadlock).
Each worker writes its video's directory itself (`CacheWriter.write_video`, atomic); the parent records
failures, shows progress, and finally writes the manifest with the training-split audio statistics.

Runs are resumable and idempotent: videos already in the cache (their `meta.json` exists) are skipped, so
a second run only retries what failed or was interrupted (leftover temporary directories are deleted, so
run one preprocessing job per cache at a time). A cache holds one configuration: resuming with another
`PreprocessConfig` is refused.

A bad input (corrupt video, missing audio, short or NaN label file, lengths beyond the tolerance, a
broken physiological recording) fails only its own video, with a reason naming the file; the summary lists
it and the CLI exits non-zero.

Physiological signals: `PreprocessConfig.physio="auto"` is resolved once, at the start, into "yes" (the
corpus has `recordings_physio/`) or "no", and the manifest's config records that answer; "yes" on a corpus
without that folder, or on Aff-Wild2, which has none, stops before any video is processed.

Detectors of the user's own come from the plugin modules the caller names (`detector_modules`, the CLI's
`--detector_module`): they are imported in this process and passed with every job, so each spawned worker
imports them before creating its detector (nothing is ever imported by a name read from a file). Workers
exit when the parent dies, even by SIGKILL (`worker_process.exit_with_parent`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from pkd_jax.data import affwild2, recola
from pkd_jax.data.audio import log_mel
from pkd_jax.data.cache import CacheWriter, VideoRecord
from pkd_jax.data.faces import FaceCropper, create_detector, load_detector_modules
from pkd_jax.data.preprocess_config import PreprocessConfig
from pkd_jax.data.worker_process import exit_with_parent

_LOG = logging.getLogger(__name__)

# Corpus readers: each module has `discover(src) -> jobs`, `extract(job, config, cropper) -> AlignedVideo`,
# `NEEDS_DETECTOR` and `SUPPORTS_PHYSIO` (then also `PHYSIO_FOLDER` and `has_physio(src) -> bool`).
# Synthetic corpora are written in the RECOLA layout.
DATASETS: dict[str, ModuleType] = {"recola": recola, "synthetic": recola, "affwild2": affwild2}


@dataclasses.dataclass
class VideoOutcome:
    """What happened to one video (returned from a worker to the parent)."""

    video_id: str
    split: str
    ok: bool
    reason: str = ""
    num_frames: int = 0
    face_found_fraction: float = 0.0
    warnings: list[str] = dataclasses.field(default_factory=list)
    timing: dict[str, float] = dataclasses.field(default_factory=dict)


# One detector per process, created on first use (OpenCV objects do not pickle).
_CROPPERS: dict[PreprocessConfig, FaceCropper] = {}


def _cropper(config: PreprocessConfig) -> FaceCropper:
    if config not in _CROPPERS:
        detector = create_detector(config.detector, **config.detector_options())
        _CROPPERS[config] = FaceCropper(detector, config.face_size, config.face_margin, config.face_align)
    return _CROPPERS[config]


def _reason(error: BaseException) -> str:
    """A failure reason: data errors carry their own message (naming the file); anything else is a bug."""
    if isinstance(error, (ValueError, OSError)):
        return str(error)
    where = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    at = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
    return f"internal error {type(error).__name__}{at}: {error}"


def process_video(
    dataset: str,
    job: Any,
    config: PreprocessConfig,
    out: str | Path,
    detector_modules: Sequence[str] = (),
) -> VideoOutcome:
    """Extracts, aligns and writes one video into the cache at `out`; never raises for bad data.

    `detector_modules` are the user's plugin modules (see `faces.load_detector_modules`), imported before
    the detector is created: a spawned worker does not inherit the parent's registrations.
    """
    start = time.perf_counter()
    reader = DATASETS[dataset]
    try:
        cropper = None
        if reader.NEEDS_DETECTOR:
            load_detector_modules(detector_modules)
            cropper = _cropper(config)
        aligned = reader.extract(job, config, cropper)
        aligned.check(config.samples_per_frame)
        logmel = log_mel(
            aligned.audio,
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            hop=config.hop,
            n_mels=config.n_mels,
            fmin=config.fmin,
            fmax=config.fmax,
            log_floor=config.log_floor,
        )
        if not np.isfinite(logmel).all():
            raise ValueError(
                f"{aligned.extra.get('sources', {}).get('audio', job.video_id)}: non-finite log-mel"
            )
        record = VideoRecord(
            job.video_id,
            job.split,
            "ok",
            num_frames=aligned.num_frames,
            face_found_fraction=float(aligned.face_found.mean()),
            warnings=list(aligned.warnings),
        )
        arrays = {
            "frames": aligned.frames,
            "face_found": aligned.face_found,
            "logmel": logmel,
            "labels": aligned.labels.astype(np.float32),
            "label_mask": aligned.label_mask,
        }
        if aligned.physio is not None:
            arrays["physio"] = aligned.physio.astype(np.float32)
        elif config.physio == "yes":
            raise AssertionError(f"{job.video_id}: the reader returned no physiological features")
        timing = dict(aligned.extra.get("timing", {}), seconds=time.perf_counter() - start)
        extra = dict(aligned.extra, timing=timing, config_digest=config.digest())
        CacheWriter(out, dataset=dataset, config=config.to_dict()).write_video(record, arrays, extra)
    except Exception as e:  # One bad video must not stop the corpus; the reason goes into the manifest.
        return VideoOutcome(job.video_id, job.split, False, reason=_reason(e))
    return VideoOutcome(
        job.video_id,
        job.split,
        True,
        num_frames=record.num_frames,
        face_found_fraction=record.face_found_fraction,
        warnings=record.warnings,
        timing=timing,
    )


def _worker_init(parent_pid: int) -> None:
    """Runs first in every worker process."""
    exit_with_parent(parent_pid)
    # One video per core: OpenCV's own thread pool would oversubscribe the machine.
    cv2.setNumThreads(1)


def _check_resumable(writer: CacheWriter, dataset: str, config: PreprocessConfig, ids: list[str]) -> None:
    """Refuses to mix datasets or configurations in one cache."""
    manifest = writer.root / "manifest.json"
    if manifest.is_file():
        old = json.loads(manifest.read_text())
        if old.get("dataset") != dataset or old.get("config") != config.to_dict():
            raise ValueError(
                f"{manifest}: this cache holds dataset {old.get('dataset')!r} preprocessed with another "
                "configuration; use a new --out directory (or delete this one)"
            )
    for video_id in ids:
        if writer.is_done(video_id):
            meta = json.loads((writer.video_dir(video_id) / "meta.json").read_text())
            if meta.get("config_digest") != config.digest():
                raise ValueError(
                    f"{writer.video_dir(video_id)}: cached with another configuration; "
                    "use a new --out directory"
                )


def resolve_physio(dataset: str, src: str | Path, config: PreprocessConfig) -> PreprocessConfig:
    """`config` with `physio` "auto" resolved to "yes" or "no" for the corpus at `src`.

    Raises:
      FileNotFoundError: physio "yes" on a corpus without physiological recordings.
      ValueError: physio "yes" on a dataset that has none (Aff-Wild2).
    """
    reader = DATASETS[dataset]
    if config.physio == "no":
        return config
    if not reader.SUPPORTS_PHYSIO:
        if config.physio == "yes":
            raise ValueError(
                f"physio='yes': dataset {dataset!r} has no physiological signals (only the RECOLA layout has "
                "recordings_physio/); use physio='no' or 'auto'"
            )
        return dataclasses.replace(config, physio="no")
    present = reader.has_physio(src)
    if config.physio == "yes" and not present:
        raise FileNotFoundError(
            f"{Path(src) / reader.PHYSIO_FOLDER}: folder missing, and physio='yes' requires physiological "
            "recordings (<id>.csv with time;ECG;EDA); use physio='auto' or 'no' to preprocess without them"
        )
    return dataclasses.replace(config, physio="yes" if present else "no")


def _remove_partial_writes(writer: CacheWriter) -> int:
    """Deletes temporary video directories left by an interrupted run (never read, only disk space)."""
    stale = [p for p in (writer.root / "videos").glob(".*") if p.is_dir()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale)


def preprocess_corpus(
    dataset: str,
    src: str | Path,
    out: str | Path,
    config: PreprocessConfig = PreprocessConfig(),  # Frozen, so a shared default is safe.
    workers: int = 1,
    *,
    progress: bool = True,
    verbose: bool = True,
    detector_modules: Sequence[str] = (),
) -> dict[str, Any]:
    """Preprocesses every video of a corpus into the cache at `out` and returns the manifest.

    Args:
      dataset: "recola", "synthetic" (RECOLA layout) or "affwild2".
      src: Corpus root.
      out: Cache directory (created; an existing one is resumed).
      config: Preprocessing configuration; its `physio` "auto" is resolved for this corpus first
        (`resolve_physio`), and the manifest stores the resolved configuration.
      workers: Processes; 1 runs in this process.
      progress: Show a progress bar over videos.
      verbose: Print the summary table.
      detector_modules: Plugin modules registering detectors of the user's own (`--detector_module`),
        imported here and in every worker; only names the user gave, never ones read from a file.

    Returns:
      The manifest (see `pkd_jax.data.cache`); failed videos have status "failed" and a reason.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    reader = DATASETS[dataset]
    jobs = reader.discover(src)
    config = resolve_physio(dataset, src, config)
    writer = CacheWriter(out, dataset=dataset, config=config.to_dict())
    _check_resumable(writer, dataset, config, [j.video_id for j in jobs])
    removed = _remove_partial_writes(writer)
    if removed:
        _LOG.info("%s: removed %d partial video directories of an interrupted run", writer.root, removed)
    detector_modules = tuple(detector_modules)
    load_detector_modules(detector_modules)
    if reader.NEEDS_DETECTOR:
        create_detector(config.detector, **config.detector_options())  # Fail early on a bad name.
    todo = [j for j in jobs if not writer.is_done(j.video_id)]
    skipped = [j.video_id for j in jobs if writer.is_done(j.video_id)]
    if skipped:
        _LOG.info("skipping %d of %d videos already in the cache %s", len(skipped), len(jobs), writer.root)

    outcomes: list[VideoOutcome] = []

    def collect(outcome: VideoOutcome) -> None:
        outcomes.append(outcome)
        if not outcome.ok:
            writer.record_failure(outcome.video_id, outcome.split, outcome.reason)
            _LOG.warning("failed: %s", outcome.reason)
        for warning in outcome.warnings:
            _LOG.warning("%s", warning)

    bar = tqdm(total=len(todo), desc=f"preprocess {dataset}", unit="video", disable=not progress or not todo)
    with bar:
        if workers <= 1 or len(todo) <= 1:
            for job in todo:
                collect(process_video(dataset, job, config, writer.root, detector_modules))
                bar.update()
        else:
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(
                min(workers, len(todo)),
                mp_context=context,
                initializer=_worker_init,
                initargs=(os.getpid(),),
            ) as pool:
                args = (config, writer.root, detector_modules)
                futures = {pool.submit(process_video, dataset, j, *args): j for j in todo}
                for future in concurrent.futures.as_completed(futures):
                    job = futures[future]
                    try:
                        collect(future.result())
                    except Exception as e:  # The worker died (crash, out of memory): only its video fails.
                        collect(VideoOutcome(job.video_id, job.split, False, reason=f"worker died: {e!r}"))
                    bar.update()
    manifest = writer.finalize([(j.video_id, j.split) for j in jobs])
    if verbose:
        print(format_summary(manifest, skipped=skipped, processed=[o.video_id for o in outcomes]))
    return manifest


def format_summary(manifest: dict[str, Any], *, skipped: list[str], processed: list[str]) -> str:
    """The end-of-run table: counts, then every failed video with its reason and every warning."""
    videos = manifest["videos"]
    ok = [v for v, m in videos.items() if m["status"] == "ok"]
    failed = [v for v, m in videos.items() if m["status"] != "ok"]
    done_now = [v for v in processed if v in ok]
    lines = [
        f"preprocess summary ({manifest['dataset']}): {len(videos)} videos",
        f"  {'ok':<8} {len(ok):>5}   ({len(done_now)} processed now, {len(skipped)} skipped: already cached)",
        f"  {'failed':<8} {len(failed):>5}",
    ]
    if ok:
        frames = sum(videos[v]["num_frames"] for v in ok)
        face = sum(videos[v]["face_found_fraction"] * videos[v]["num_frames"] for v in ok) / max(frames, 1)
        lines.append(f"  {'frames':<8} {frames:>5}   (face found in {100 * face:.1f}%)")
    if failed:
        width = max(len(v) for v in failed)
        lines.append("failed videos:")
        lines += [f"  {v:<{width}}  {videos[v]['reason']}" for v in failed]
    warned = [(v, w) for v in ok for w in videos[v].get("warnings", [])]
    if warned:
        lines.append("warnings:")
        lines += [f"  {w}" for _, w in warned]
    return "\n".join(lines)
