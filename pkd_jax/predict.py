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
the other videos still finish, and the exit status is 1 when any video failed. A path that does not
exist, a directory, or a still image (.png, .jpg, ... or an image under another name) is such a failed
video, and so is a teacher's audio whose length differs from its video's by more than preprocessing's
tolerance (`length_tolerance_fraction` / `length_tolerance_frames` of the cache's settings).

Inputs are never overwritten. Before the model is loaded the run is refused, naming the files, when an
output would replace an input (a --video or --audio file, compared as files, also with --overwrite), when
outputs of an earlier run exist in --out (`<video>.csv`, `<video>.png`, `summary.json`; --overwrite
replaces them), or when two videos have one name (a/x.mp4 and b/x.mp4 would both write x.csv).

Students need no audio: this module imports no audio library unless a teacher is loaded. Teachers take
the audio of each video's container, or the files named by `--audio` (one per video, in order), and
normalise it with the training cache's statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

from pkd_jax.data.faces import load_detector_modules
from pkd_jax.inference import Predictor, load_trained, plan_outputs, predict_files, summary_table


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
    flags.DEFINE_string(
        "detector_weights",
        None,
        "The face detector's weights file (mtcnn: the .npz of `python -m pkd_jax.weights import "
        "--arch=mtcnn`), when the path the training cache recorded is not valid here.",
    )
    flags.DEFINE_multi_string(
        "detector_module",
        [],
        "Plugin module registering the face detector of your own that the training cache names "
        "(pkd_jax.data.faces.register_detector); a manifest never makes pkd_jax import code. Repeatable.",
    )
    flags.DEFINE_bool(
        "overwrite",
        False,
        "Replace the outputs of an earlier run in --out (<video>.csv, <video>.png, summary.json); without "
        "it they are refused before the model loads. An input (--video, --audio) is never overwritten.",
    )


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
        plan_outputs(videos, f.out, audio=f.audio, overwrite=f.overwrite)  # refused before the model loads
        load_detector_modules(f.detector_module)  # only modules the user named, never a file's
        trained = load_trained(f.workdir, f.checkpoint)
        print(
            f"{trained.config.stage} model from {trained.source} (step {trained.step}), targets {trained.targets}"
        )
        predictor = Predictor(
            trained, chunk_frames=f.chunk_frames, cache_dir=f.cache, detector_weights=f.detector_weights
        )
        rows = predict_files(predictor, videos, f.out, audio=f.audio or None, overwrite=f.overwrite)
    except (ValueError, OSError) as e:  # a bad model, cache or argument: nothing to predict with
        raise SystemExit(f"error: {e}") from e
    print(summary_table(rows))
    print(f"outputs in {f.out}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
