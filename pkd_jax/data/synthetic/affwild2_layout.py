"""The synthetic corpus in the Aff-Wild2 (ABAW VA challenge) layout.

The Aff-Wild2 layout (``generate_affwild2_corpus``) writes ``cropped_aligned/<video>/%05d.jpg`` face crops
(none where the face is absent), ``VA_Estimation_Challenge/{Train_Set,Validation_Set}/<video>.txt``
labels with some ``-5`` (invalid) rows, and ``videos/<recording>.mp4`` carrying the audio; one training
recording holds two people, ``<recording>_left`` / ``<recording>_right``, sharing its audio track.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pkd_jax.data.synthetic.config import SyntheticConfig
from pkd_jax.data.synthetic.formats import write_latent_csv, write_recording
from pkd_jax.data.synthetic.jobs import run_jobs
from pkd_jax.data.synthetic.signals import sample_absent_spans
from pkd_jax.data.synthetic.subject import Subject

AFFWILD2_FOLDERS = {"train": "Train_Set", "dev": "Validation_Set"}


def _aligned_crop(frame: np.ndarray, box: tuple[float, float, float], size: int) -> np.ndarray:
    """A ``size`` x ``size`` crop of ``frame`` around ``box`` = (centre x, centre y, side)."""
    cx, cy, side = box
    s = size / side
    affine = np.array([[s, 0.0, size / 2 - cx * s], [0.0, s, size / 2 - cy * s]])
    return cv2.warpAffine(frame, affine, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def _affwild2_labels(subject: Subject, seed: int, invalid_fraction: float, config: SyntheticConfig) -> str:
    """The annotation file's text: header, then ``valence,arousal`` per frame with -5 over a few spans."""
    rng = np.random.default_rng([seed, 5, *subject.video_id.encode("utf-8")])
    spans = sample_absent_spans(
        rng, subject.n_frames, dataclasses.replace(config, face_absent_fraction=invalid_fraction)
    )
    invalid = np.zeros(subject.n_frames, bool)
    for span in spans:
        invalid[span.start : span.stop] = True
    rows = [
        "-5,-5" if bad else f"{v:.4f},{a:.4f}"
        for v, a, bad in zip(subject.gold["valence"], subject.gold["arousal"], invalid, strict=True)
    ]
    return "valence,arousal\n" + "\n".join(rows) + "\n"


def generate_affwild2_recording(
    out_dir: str | Path,
    name: str,
    split: str,
    n_frames: int,
    seed: int,
    config: SyntheticConfig = SyntheticConfig(),  # frozen, so a shared default is safe
    *,
    pair: bool = False,
    crop_size: int = 112,
    invalid_fraction: float = 0.03,
) -> dict[str, Any]:
    """One recording in the Aff-Wild2 layout: ``videos/<name>.mp4`` with its audio, and per annotated
    person ``cropped_aligned/<id>/%05d.jpg`` and ``VA_Estimation_Challenge/<Set>/<id>.txt``.

    With ``pair``, two people (``<name>_left``, ``<name>_right``) sit side by side in the video and both
    speak on its one audio track (their waveforms mixed), as in Aff-Wild2's two-subject videos. Face-absent
    frames get no crop file; about ``invalid_fraction`` of the label rows are ``-5,-5`` (invalid).
    """
    out = Path(out_dir)
    ids = [f"{name}_left", f"{name}_right"] if pair else [name]
    subjects = [Subject.sample(video_id, n_frames, seed, config) for video_id in ids]
    crop_dirs = [out / "cropped_aligned" / video_id for video_id in ids]
    for folder in crop_dirs:
        folder.mkdir(parents=True, exist_ok=True)
    labels_dir = out / "VA_Estimation_Challenge" / AFFWILD2_FOLDERS[split]
    for sub in (labels_dir, out / "videos", out / "latent"):
        sub.mkdir(parents=True, exist_ok=True)

    def frames() -> Iterator[np.ndarray]:
        streams = [subject.frames() for subject in subjects]
        for t in range(n_frames):
            images = [next(stream) for stream in streams]
            for subject, image, folder in zip(subjects, images, crop_dirs, strict=True):
                if subject.face_visible[t]:  # Aff-Wild2 has no crop where no face was found.
                    crop = _aligned_crop(image, subject.renderer.face_box(subject.head[t]), crop_size)
                    cv2.imwrite(str(folder / f"{t + 1:05d}.jpg"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            yield np.concatenate(images, axis=1)

    wave = np.mean([subject.wave for subject in subjects], axis=0)
    codec = write_recording(out / "videos" / f"{name}.mp4", frames(), wave, config)
    for subject in subjects:
        text = _affwild2_labels(subject, seed, invalid_fraction, config)
        (labels_dir / f"{subject.video_id}.txt").write_text(text, encoding="utf-8")
        write_latent_csv(
            out / "latent" / f"{subject.video_id}.csv", subject.valence, subject.arousal,
            subject.face_visible, config.fps,
        )  # fmt: skip
    return {
        "recording": name,
        "split": split,
        "codec": codec,
        "subjects": [{"id": subject.video_id, **subject.describe()} for subject in subjects],
    }


def generate_affwild2_corpus(
    out_dir: str | Path,
    n_train: int,
    n_dev: int,
    seconds: float,
    seed: int,
    config: SyntheticConfig = SyntheticConfig(),  # frozen, so a shared default is safe
    workers: int = 1,
    progress: bool = True,
    *,
    crop_size: int = 112,
    invalid_fraction: float = 0.03,
) -> list[str]:
    """Generates a synthetic corpus in the Aff-Wild2 (ABAW VA challenge) layout.

    Recordings ``train_1..n_train`` and ``dev_1..n_dev``; the last training recording holds two people
    (``train_<n>_left`` / ``train_<n>_right`` sharing ``videos/train_<n>.mp4``). Same generative model
    as the RECOLA layout (see ``pkd_jax.data.synthetic``); read it with ``pkd_jax.data.affwild2``.

    Returns:
      The annotated video ids (the pair counts twice), train first.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_frames = round(seconds * config.fps)
    if n_frames < 1 or n_train < 0 or n_dev < 0:
        raise ValueError("need seconds >= 1 frame and non-negative counts")
    jobs = [(f"train_{i}", "train", i == n_train) for i in range(1, n_train + 1)]
    jobs += [(f"dev_{i}", "dev", False) for i in range(1, n_dev + 1)]
    calls = {
        name: functools.partial(
            generate_affwild2_recording,
            out,
            name,
            split,
            n_frames,
            seed,
            config,
            pair=pair,
            crop_size=crop_size,
            invalid_fraction=invalid_fraction,
        )
        for name, split, pair in jobs
    }
    results = run_jobs(calls, workers, "synthetic Aff-Wild2 recordings", progress)
    ids = [s["id"] for name, _, _ in jobs for s in results[name]["subjects"]]
    meta = {
        "generator": "pkd_jax.data.synthetic",
        "layout": "affwild2",
        "seed": seed,
        "n_train": n_train,
        "n_dev": n_dev,
        "seconds": seconds,
        "crop_size": crop_size,
        "invalid_fraction": invalid_fraction,
        "ids": ids,
        "config": dataclasses.asdict(config),
        "recordings": [results[name] for name, _, _ in jobs],
    }
    (out / "synthetic.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return ids
