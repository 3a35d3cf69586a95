"""Predict valence and arousal on new videos with a trained student (or a teacher, given audio).

    python -m pkd_jax.predict --workdir=runs/student --video=a.mp4 --video=b.mp4 --out=predictions
    python -m pkd_jax.predict --checkpoint=runs/student/checkpoints/2000 --video=a.mp4 b.mp4 --out=DIR
    python -m pkd_jax.predict --workdir=runs/teacher --video=a.mp4 --audio=a.wav --out=DIR

Each video is decoded at the cache's frame rate and its faces are detected and cropped by the same code
and settings as preprocessing (`pkd_jax.data.video`, `pkd_jax.data.faces`, the settings read from the
training cache's manifest). Frames without a face follow the missing-face policy the model was trained
with (`config.data.missing_face`). The network runs in chunks of frames carrying the recurrent state
from chunk to chunk, so a video of any length is one continuous sequence in bounded memory: only one
chunk of face crops and the per-frame predictions are held.

Writes `<out>/<video>.csv` (frame, time_s, one column per target, face_found), `<out>/<video>.png`
(both curves over time, face-absent spans shaded) and `<out>/summary.json`, and prints a summary table.
A video that cannot be read, or in which no face is ever found, is reported with its file and reason;
the other videos still finish, and the exit status is 1 when any video failed.

Students need no audio: this module imports no audio library unless a teacher is loaded. Teachers take
the audio of each video's container, or the files named by `--audio` (one per video, in order), and
normalise it with the training cache's statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

from pkd_jax.inference import Predictor, load_trained, predict_files, summary_table


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("workdir", None, "Training workdir; its best checkpoint is used.")
    flags.DEFINE_string("checkpoint", None, "Or one checkpoint directory, <workdir>/checkpoints/<step>.")
    flags.DEFINE_multi_string("video", [], "Video file(s); more may follow as plain arguments.")
    flags.DEFINE_string("out", None, "Output directory for the CSVs, plots and summary.json.", required=True)
    flags.DEFINE_multi_string(
        "audio",
        [],
        "Teachers only: one audio file per video, in order (default: each video's own audio track).",
    )
    flags.DEFINE_integer(
        "chunk_frames", None, "Frames per inference step (default: the config's data.eval_chunk_frames)."
    )
    flags.DEFINE_string("cache", None, "The training feature cache (default: the one config.json names).")


def main(argv: Sequence[str]) -> int:
    """CLI entry point; returns the exit status (0 when every video was predicted)."""
    from absl import flags

    f = flags.FLAGS
    videos = [*f.video, *argv[1:]]
    if not videos:
        raise SystemExit("no video given: --video=FILE [FILE ...]")
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file it opens at INFO
    try:
        trained = load_trained(f.workdir, f.checkpoint)
        print(
            f"{trained.config.stage} model from {trained.source} (step {trained.step}), targets {trained.targets}"
        )
        predictor = Predictor(trained, chunk_frames=f.chunk_frames, cache_dir=f.cache)
        rows = predict_files(predictor, videos, f.out, audio=f.audio or None)
    except (ValueError, OSError) as e:  # a bad model, cache or argument: nothing to predict with
        raise SystemExit(f"error: {e}") from e
    print(summary_table(rows))
    print(f"outputs in {f.out}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
