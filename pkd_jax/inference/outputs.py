"""What `predict` writes for each video: a per-frame CSV, a plot, and a summary of the whole run.

`predict_files` predicts many videos and never raises for a bad one: its row records the file and the
reason, and the other videos still finish.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pkd_jax.data.video import VideoError, probe_video
from pkd_jax.inference.frames import PredictError
from pkd_jax.inference.predictor import Predictor, VideoPrediction


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


def output_names(videos: Sequence[Path]) -> list[str]:
    """File stems for the outputs, made unique when two videos share a name."""
    names, seen = [], {}
    for video in videos:
        stem = video.stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
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
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Predicts every video, writing its CSV and PNG into `out`; never raises for a bad video.

    Returns one summary row per video (also written to `<out>/summary.json`): `ok`, and the file,
    frame count, face-found fraction, mean prediction and speed, or the `error`.
    """
    videos = [Path(v) for v in videos]
    if audio and not predictor.trained.is_teacher:
        raise ValueError(f"audio files given, but the {predictor.trained.config.stage} model takes no audio")
    if audio and len(audio) != len(videos):
        raise ValueError(f"{len(audio)} audio files for {len(videos)} videos; give one per video, in order")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fps = float(predictor.settings["fps"])
    estimates = []
    for video in videos:
        try:
            info = probe_video(video)
            estimates.append(info.num_frames * fps / info.fps)  # the header's count, resampled
        except VideoError:
            estimates.append(0)  # reported when the video is read
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=round(sum(estimates)), unit="frame", disable=not progress, desc="predict")
    with bar:
        for k, (video, name) in enumerate(zip(videos, output_names(videos), strict=True)):
            bar.set_postfix_str(f"video {k + 1}/{len(videos)} {video.name}")
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
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return rows
