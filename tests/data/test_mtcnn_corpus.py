"""MTCNN on the synthetic corpus: the reference's detections, a cache built with it through `main`
(landmark-aligned crops) that training reads, and predict's faces equal to the cache's."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from pkd_jax.data import synthetic
from pkd_jax.data.cache import Cache
from pkd_jax.data.video import VideoReader
from pkd_jax.detect.mtcnn import CascadeSettings, detect_faces
from pkd_jax.inference.frames import face_chunks
from pkd_jax.inference.settings import make_cropper, preprocess_settings
from pkd_jax.testing.facenet_reference import assert_same_faces, facenet_module
from pkd_jax.weights.mtcnn import load_mtcnn_weights
from pkd_jax.workdir.metric_writer import read_metrics
from pkd_jax.workdir.trained import load_trained
from tests.train.test_train import run_main


def test_corpus_frames_match_the_reference(tiny_corpus: Path, mtcnn_weights: Path):
    latent = synthetic.read_latent_csv(tiny_corpus / "latent" / "train_1.csv")
    absent = np.flatnonzero(~np.asarray(latent["face_visible"], bool))
    # 16 frames of 128 x 128 pixels: the program the preprocessing below compiles (see tests/detect).
    wanted = sorted({*range(0, 150, 19), *absent[:: max(1, len(absent) // 8)][:8].tolist()})[:16]
    wanted += [i for i in range(150) if i not in wanted][: 16 - len(wanted)]
    wanted = sorted(wanted)
    video = tiny_corpus / "recordings_video" / "train_1.mp4"
    frames = np.stack([f for i, f in enumerate(VideoReader(video, 25)) if i in wanted])
    min_face = 0.15 * 128
    ours = detect_faces(
        load_mtcnn_weights(mtcnn_weights), jnp.asarray(frames), CascadeSettings(min_face=min_face)
    )
    reference = facenet_module().MTCNN(min_face_size=min_face, keep_all=True, select_largest=False)
    for i, frame in enumerate(frames):
        ref_boxes, _, ref_points = reference.detect(frame, landmarks=True)
        valid = np.asarray(ours.valid[i])
        boxes, points = np.asarray(ours.boxes[i])[valid], np.asarray(ours.landmarks[i])[valid]
        assert_same_faces(f"train_1 frame {wanted[i]}", boxes, points, ref_boxes, ref_points)


def test_mtcnn_cache_feeds_training_and_predict_uses_its_settings(
    tmp_path, tiny_corpus, mtcnn_weights, copy_corpus
):
    corpus = copy_corpus(tiny_corpus, tmp_path / "corpus", ("train_1", "dev_1"))
    cache_dir, workdir = tmp_path / "cache", tmp_path / "visual"
    run_main(
        "visual",
        workdir,
        cache_dir,
        f"--config.data.root={corpus}",
        "--config.data.dataset=synthetic",
        "--config.data.face_detector=mtcnn",
        f"--config.data.detector_weights={mtcnn_weights}",
        "--config.data.face_align=landmarks",
    )
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    settings = manifest["config"]
    assert (settings["detector"], settings["face_align"]) == ("mtcnn", "landmarks")
    assert settings["detector_weights"] == str(mtcnn_weights)
    assert all(v["status"] == "ok" for v in manifest["videos"].values())
    assert read_metrics(workdir, "eval") and np.isfinite(read_metrics(workdir, "train")[-1]["loss"])
    cache = Cache(cache_dir)
    found, visible = [], []
    for video_id in manifest["videos"]:
        found.append(np.asarray(cache.video(video_id).face_found))
        visible.append(synthetic.read_latent_csv(corpus / "latent" / f"{video_id}.csv")["face_visible"])
    found, visible = np.concatenate(found), np.concatenate(visible).astype(bool)
    assert found[visible].mean() >= 0.9 and found[~visible].mean() <= 0.05
    # predict detects and aligns with the cache's settings: its crops are the cache's.
    trained = load_trained(workdir, None)
    face_settings, _ = preprocess_settings(trained.config, cache_dir)
    cropper = make_cropper(face_settings)
    assert cropper.align == "landmarks" and type(cropper.detector).__name__ == "MtcnnDetector"
    video = corpus / "recordings_video" / "dev_1.mp4"
    crops = np.concatenate(
        [c for c, _ in face_chunks(video, cropper, fps=25, chunk_frames=64, missing_face="black")]
    )
    np.testing.assert_array_equal(crops, np.asarray(cache.video("dev_1").frames))
