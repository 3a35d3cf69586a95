"""Haar against MTCNN: detection rate, false positives and frames/s, with and without tracking.

    python benchmarks/face_detectors.py --weights=mtcnn.npz [--videos=4] [--seconds=20] [--json]

Corpus: synthetic videos (the demo's 256 x 256 frames, generated into a temporary folder, with more
face-absent spans than the default) whose latent track says on which frames the face is visible. A
visible frame counts as a hit when a face is returned; an absent frame with a face returned is a false
positive. Photos: the ten astronaut variants of `pkd_jax.testing.face_photos` (crops, scales, rotations
up to 30 degrees, covered mouth or eye), one frame each, no tracking: a hit is a box containing the known
face centre, a false positive any other box returned (each detector keeps one face per frame).
Frames/s: detection alone on the corpus (decoding excluded), after an untimed first video that compiles
MTCNN's programs; the detector settings are preprocessing's defaults (320 px detection width, smallest
face 15% of the shorter side), `redetect_every` 1 (no tracking) or 10 (tracking).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from pkd_jax.data import synthetic
from pkd_jax.data.faces import create_detector, detect_many
from pkd_jax.data.video import VideoReader
from pkd_jax.provenance import provenance
from pkd_jax.testing.face_photos import photo_variants

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "weights", None, "MTCNN weights (.npz of `python -m pkd_jax.weights import`).", required=True
)
flags.DEFINE_integer("videos", 4, "Synthetic videos.")
flags.DEFINE_float("seconds", 20.0, "Seconds per video (25 frames each).")
flags.DEFINE_integer("batch_frames", 16, "Frames handed to a detector at once.")
flags.DEFINE_bool("json", False, "Print the results as JSON too.")
flags.DEFINE_bool(
    "reference",
    False,
    "Also time facenet-pytorch's MTCNN (the reference, PyTorch on the CPU; fetched by pip once) against "
    "pkd_jax's full cascade on the same 16-frame batches, interleaved.",
)

VARIANTS = [("haar", 1), ("haar", 10), ("mtcnn", 1), ("mtcnn", 10)]


def _corpus(root: Path) -> list[tuple[list[np.ndarray], np.ndarray]]:
    config = synthetic.SyntheticConfig(face_absent_fraction=0.25)
    ids = synthetic.generate_corpus(root, FLAGS.videos, 0, FLAGS.seconds, 0, config=config, progress=False)
    out = []
    for video_id in ids:
        frames = list(VideoReader(root / "recordings_video" / f"{video_id}.mp4", 25))
        visible = np.asarray(
            synthetic.read_latent_csv(root / "latent" / f"{video_id}.csv")["face_visible"], bool
        )
        n = min(len(frames), len(visible))
        out.append((frames[:n], visible[:n]))
    return out


def _detector(name: str, every: int):
    return create_detector(name, weights=FLAGS.weights, redetect_every=every, batch_frames=FLAGS.batch_frames)


def _run_video(detector, frames: list[np.ndarray]) -> tuple[np.ndarray, float]:
    detector.reset()
    found, start = [], time.perf_counter()
    for i in range(0, len(frames), FLAGS.batch_frames):
        found += [f is not None for f in detect_many(detector, frames[i : i + FLAGS.batch_frames])]
    return np.asarray(found), time.perf_counter() - start


def _photos(name: str) -> dict[str, float]:
    detector = _detector(name, 1)
    hits = false = 0
    variants = photo_variants()
    for image, (cx, cy) in variants.values():
        detector.reset()
        face = detect_many(detector, [image])[0]
        if face is None:
            continue
        x, y, w, h = face.box
        inside = x <= cx <= x + w and y <= cy <= y + h
        hits += inside
        false += not inside
    return {"photo_hit_rate": hits / len(variants), "photo_false_positives": false, "photos": len(variants)}


def _reference_rows(corpus: list[tuple[list[np.ndarray], np.ndarray]]) -> dict[str, float]:
    """Full detection of the same batches by facenet-pytorch and by `detect_faces`, alternating per batch."""
    import jax
    import jax.numpy as jnp

    from pkd_jax.detect.mtcnn import CascadeSettings, detect_faces
    from pkd_jax.testing.facenet_reference import facenet_module
    from pkd_jax.weights.mtcnn import load_mtcnn_weights

    frames = np.stack([f for video, _ in corpus for f in video])
    side = min(frames.shape[1:3])
    min_face = 0.15 * side
    reference = facenet_module().MTCNN(min_face_size=min_face, keep_all=True)
    params, settings = load_mtcnn_weights(FLAGS.weights), CascadeSettings(min_face=min_face)
    batches = [frames[i : i + 16] for i in range(0, len(frames) - 15, 16)]
    jax.block_until_ready(detect_faces(params, jnp.asarray(batches[0]), settings))
    reference.detect(batches[0])
    ours = theirs = 0.0
    for batch in batches:
        start = time.perf_counter()
        jax.block_until_ready(detect_faces(params, jnp.asarray(batch), settings))
        ours += time.perf_counter() - start
        start = time.perf_counter()
        reference.detect(batch)
        theirs += time.perf_counter() - start
    n = 16 * len(batches)
    return {
        "pkd_jax_frames_per_s": n / ours,
        "facenet_pytorch_frames_per_s": n / theirs,
        "time_ratio": ours / theirs,
    }


def main(argv: list[str]) -> None:
    del argv
    with tempfile.TemporaryDirectory() as tmp:
        corpus = _corpus(Path(tmp))
    reference = _reference_rows(corpus) if FLAGS.reference else None
    rows = []
    for name, every in VARIANTS:
        detector = _detector(name, every)
        _run_video(detector, corpus[0][0][: 4 * FLAGS.batch_frames])  # compiles MTCNN's programs
        found, visible, seconds, frames = [], [], 0.0, 0
        for video, vis in corpus:
            f, s = _run_video(detector, video)
            found.append(f)
            visible.append(vis)
            seconds += s
            frames += len(video)
        f, v = np.concatenate(found), np.concatenate(visible)
        row = {
            "detector": name,
            "redetect_every": every,
            "hit_rate": float(f[v].mean()),
            "false_positive_rate": float(f[~v].mean()),
            "visible_frames": int(v.sum()),
            "absent_frames": int((~v).sum()),
            "frames_per_s": frames / seconds,
        }
        if every == 1:
            row.update(_photos(name))
        rows.append(row)
    print(
        "| detector | tracking | hit rate (visible frames) | false positives (absent frames) | frames/s | "
        "photo variants found | photo false positives |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        photo = ("", "")
        if "photos" in r:
            photo = (
                f"{r['photo_hit_rate'] * r['photos']:.0f}/{r['photos']}",
                str(r["photo_false_positives"]),
            )
        print(
            f"| {r['detector']} | {'every ' + str(r['redetect_every']) if r['redetect_every'] > 1 else 'no'} | "
            f"{100 * r['hit_rate']:.1f}% of {r['visible_frames']} | {100 * r['false_positive_rate']:.1f}% of "
            f"{r['absent_frames']} | {r['frames_per_s']:.1f} | {photo[0]} | {photo[1]} |"
        )
    if reference:
        print(
            f"full cascade, 16-frame batches, interleaved: pkd_jax {reference['pkd_jax_frames_per_s']:.1f} "
            f"frames/s, facenet-pytorch {reference['facenet_pytorch_frames_per_s']:.1f} frames/s, "
            f"pkd_jax's time / facenet-pytorch's = {reference['time_ratio']:.2f}"
        )
    if FLAGS.json:
        print(json.dumps({"rows": rows, "reference": reference, "provenance": provenance()}, indent=1))


if __name__ == "__main__":
    app.run(main)
