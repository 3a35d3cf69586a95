"""What `predict` writes for each video: a per-frame CSV, a plot, and a summary of the whole run.

`predict_files` predicts many videos and never raises for a bad one: its row records the file and the
reason, and the other videos still finish.

Before anything is written, `plan_outputs` checks the whole run: an input (a video or audio file) is never
overwritten, not even with `overwrite=True`; outputs of an earlier run (`<stem>.csv`, `<stem>.png`,
`summary.json` in `out`) are replaced only with `overwrite=True`; two inputs with one output name (same
stem, compared case-insensitively) are refused.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pkd_jax.data.video import VideoError, probe_video
from pkd_jax.inference.frames import PredictError
from pkd_jax.inference.predictor import Predictor, VideoPrediction
from pkd_jax.provenance import provenance
from pkd_jax.workdir.config_record import read_provenance


def write_csv(path: str | Path, result: VideoPrediction) -> None:
    """`frame, time_s, <targets>, face_found`, one row per frame."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["frame", "time_s", *result.targets, "face_found"])
        for t in range(result.num_frames):
            values = [f"{x:.5f}" for x in result.pred[t]]
            writer.writerow([t, f"{t / result.fps:.3f}", *values, int(result.face_found[t])])


def absent_spans(face_found: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) frame ranges where no face was found."""
    missing = np.concatenate([[False], ~np.asarray(face_found, bool), [False]])
    edges = np.flatnonzero(np.diff(missing.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def plot(path: str | Path, result: VideoPrediction) -> None:
    """A PNG of every target over time, with the face-absent spans shaded."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    time_s = np.arange(result.num_frames) / result.fps
    fig, ax = plt.subplots(figsize=(12, 3.5), dpi=100)
    for i, name in enumerate(result.targets):
        ax.plot(time_s, result.pred[:, i], lw=1.0, label=name)
    for k, (a, b) in enumerate(absent_spans(result.face_found)):
        ax.axvspan(a / result.fps, b / result.fps, color="0.8", lw=0, label="no face" if k == 0 else None)
    ax.set_xlim(0, max(time_s[-1], 1.0 / result.fps))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("prediction")
    ax.set_title(result.path.name)
    ax.legend(loc="upper right", ncol=3, fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


SUMMARY = "summary.json"


def output_names(videos: Sequence[str | Path]) -> list[str]:
    """The output stem of each video: its file name without the extension.

    Raises:
      ValueError: naming the videos, when two of them would write the same outputs (the same stem, or
        stems differing only in case, which are one file on case-insensitive file systems).
    """
    names: list[str] = []
    first: dict[str, str | Path] = {}
    clashes = []
    for video in videos:
        stem = Path(video).stem
        key = stem.casefold()
        if key in first:
            clashes.append(f"{first[key]} and {video} would both write {stem}.csv and {stem}.png")
        else:
            first[key] = video
        names.append(stem)
    if clashes:
        raise ValueError(
            "two videos of one name: "
            + "; ".join(clashes)
            + ". Rename one, or predict them into separate output directories (--out)"
        )
    return names


def plan_outputs(
    videos: Sequence[str | Path],
    out: str | Path,
    *,
    audio: Sequence[str | Path] | None = None,
    overwrite: bool = False,
) -> list[str]:
    """The output stems of `videos` (see `output_names`), after checking that the run may write them.

    Nothing is written or loaded: this runs before the model is loaded, so a refused run costs nothing.

    Args:
      videos: The video files, in order.
      out: The output directory (`<stem>.csv`, `<stem>.png` per video, and `summary.json`).
      audio: A teacher's audio files, inputs too.
      overwrite: Replace the outputs of an earlier run; without it, existing outputs are refused.

    Raises:
      ValueError: when an output would overwrite an input (a video or audio file, compared as files, so
        other spellings and links of the same file count; refused even with `overwrite`), when outputs
        already exist and `overwrite` is False (listing them), when two videos share an output name, or
        when `out` exists but is not a directory.
    """
    names = output_names(videos)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} (the output directory) is not a directory")
    inputs: dict[tuple[int, int], Path] = {}  # (device, inode) -> the input as given
    for path in [*videos, *(audio or [])]:
        try:
            st = os.stat(path)
        except OSError:
            continue  # a missing input is reported when its video is predicted; it cannot be overwritten
        inputs.setdefault((st.st_dev, st.st_ino), Path(path))
    outputs = [out / f"{name}{ext}" for name in names for ext in (".csv", ".png")] + [out / SUMMARY]
    clobbered, existing = [], []
    for path in outputs:
        try:
            st = os.stat(path)  # follows links: writing would replace the file a link points to
        except OSError:
            continue
        source = inputs.get((st.st_dev, st.st_ino))
        if source is not None:
            clobbered.append(f"{path} is the input {source}")
        else:
            existing.append(str(path))
    if clobbered:
        raise ValueError(
            "refusing to overwrite an input file: "
            + "; ".join(clobbered)
            + ". Choose another output directory (--out)"
        )
    if existing and not overwrite:
        raise ValueError(
            f"outputs of an earlier run exist in {out}: {', '.join(existing)}. Pass --overwrite "
            "(overwrite=True) to replace them, or choose another output directory (--out)"
        )
    return names


def summary_table(rows: list[dict[str, Any]]) -> str:
    """The human-readable end-of-run table (one line per video, failures with their reason)."""
    lines = [
        f"{'video':<28} {'frames':>7} {'seconds':>8} {'face %':>7} {'mean pred':>20} {'frames/s':>9}  status"
    ]
    for row in rows:
        if row["ok"]:
            means = " ".join(f"{k[:3]} {v:+.3f}" for k, v in row["mean"].items())
            lines.append(
                f"{row['name']:<28} {row['frames']:>7} {row['duration_s']:>8.1f} {100 * row['face_found']:>6.1f}% "
                f"{means:>20} {row['frames_per_s']:>9.1f}  ok"
            )
        else:
            lines.append(
                f"{row['name']:<28} {'':>7} {'':>8} {'':>7} {'':>20} {'':>9}  FAILED: {row['error']}"
            )
    failed = sum(not r["ok"] for r in rows)
    lines.append(
        f"{len(rows) - failed} of {len(rows)} videos predicted" + (f", {failed} failed" if failed else "")
    )
    return "\n".join(lines)


def predict_files(
    predictor: Predictor,
    videos: Sequence[str | Path],
    out: str | Path,
    *,
    audio: Sequence[str | Path] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Predicts every video, writing its CSV and PNG into `out`; never raises for a bad video.

    Returns one summary row per video (also written to `<out>/summary.json`): `ok`, and the file,
    frame count, face-found fraction, mean prediction and speed, or the `error`.

    Raises:
      ValueError: before anything is written, for a run `plan_outputs` refuses (an output that would
        overwrite an input, existing outputs without `overwrite`, two videos of one output name), or
        audio files that do not fit the model or the videos.
    """
    paths = [Path(v) for v in videos]
    names = plan_outputs(paths, out, audio=audio, overwrite=overwrite)
    if audio and not predictor.trained.is_teacher:
        raise ValueError(f"audio files given, but the {predictor.trained.config.stage} model takes no audio")
    if audio and len(audio) != len(paths):
        raise ValueError(f"{len(audio)} audio files for {len(paths)} videos; give one per video, in order")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fps = float(predictor.settings["fps"])
    estimates = []
    for video in paths:
        try:
            info = probe_video(video)
            estimates.append(info.num_frames * fps / info.fps)  # the header's count, resampled
        except VideoError:
            estimates.append(0)  # reported when the video is read
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=round(sum(estimates)), unit="frame", disable=not progress, desc="predict")
    with bar:
        for k, (video, name) in enumerate(zip(paths, names, strict=True)):
            bar.set_postfix_str(f"video {k + 1}/{len(paths)} {video.name}")
            row: dict[str, Any] = {"video": str(video), "name": name}
            try:
                result = predictor.predict(video, audio=audio[k] if audio else None, on_frames=bar.update)
                write_csv(out / f"{name}.csv", result)
                plot(out / f"{name}.png", result)
            except (VideoError, PredictError, ValueError, OSError) as e:
                message = str(e) if str(video) in str(e) else f"{video}: {e}"
                tqdm.write(f"failed: {message}")
                rows.append(row | {"ok": False, "error": message})
                continue
            row |= {
                "ok": True,
                "frames": result.num_frames,
                "duration_s": result.num_frames / result.fps,
                "face_found": float(result.face_found.mean()),
                "mean": {t: float(result.pred[:, i].mean()) for i, t in enumerate(result.targets)},
                "frames_per_s": result.num_frames / result.seconds,
                "csv": str(out / f"{name}.csv"),
                "png": str(out / f"{name}.png"),
            }
            rows.append(row)
    summary = {
        "model": str(predictor.trained.source),
        "stage": predictor.trained.config.stage,
        "face_settings": str(predictor.cache.root / "manifest.json") if predictor.cache else "defaults",
        "chunk_frames": predictor.chunk_frames,
        "compile_s": predictor.compile_seconds,
        "videos": rows,
        "provenance": provenance(),  # of this predict run
        "model_provenance": _model_provenance(predictor),  # of the training run (its config.json)
    }
    (out / SUMMARY).write_text(json.dumps(summary, indent=2))
    return rows


def _model_provenance(predictor: Predictor) -> dict[str, Any] | None:
    """The provenance recorded in the model's workdir config.json (None for older workdirs)."""
    path = predictor.trained.source.parent.parent / "config.json"
    try:
        return read_provenance(path) if path.is_file() else None
    except ValueError:
        return None
