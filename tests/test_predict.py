"""`pkd_jax.predict` on synthetic videos: the CLI's outputs and exit status, chunked inference equal to one
pass, the missing-face policies, a long face-absent span, corrupt and face-less videos, teachers with audio,
and a student run that never imports an audio library."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import soundfile

from configs import recola_student, recola_teacher
from pkd_jax import inference
from pkd_jax.config import build
from pkd_jax.data import synthetic
from pkd_jax.data.cache import CacheError, CacheWriter, VideoRecord
from pkd_jax.data.preprocess_config import PreprocessConfig
from pkd_jax.data.video import VideoError, VideoReader
from pkd_jax.train.state import create_state, make_optimizer
from pkd_jax.workdir.checkpoints import Checkpointer
from tests.conftest import outside_checkout_env

REPO = Path(__file__).resolve().parents[1]
FACE_SIZE = 32  # the tiny configs' face size
FRAME = 128  # synthetic video side in pixels
CHUNK = 16  # frames per step: several chunks and a ragged last one in every test video


def make_cache(root: Path) -> Path:
    """A feature-cache manifest with preprocessing's settings and one training video (audio statistics)."""
    settings = PreprocessConfig(face_size=FACE_SIZE)
    writer = CacheWriter(root, dataset="synthetic", config=settings.to_dict())
    rng = np.random.default_rng(0)
    arrays = {
        "frames": np.zeros((4, FACE_SIZE, FACE_SIZE, 3), np.uint8),
        "face_found": np.ones(4, bool),
        "logmel": rng.normal(-4.0, 2.0, (4 * settings.mel_per_frame, settings.n_mels)).astype(np.float16),
        "labels": np.zeros((4, 2), np.float32),
        "label_mask": np.ones(4, bool),
    }
    writer.write_video(VideoRecord("train_1", "train", "ok", num_frames=4), arrays)
    writer.finalize([("train_1", "train")])
    return root


def make_workdir(workdir: Path, config, cache: Path | None, *, seed: int = 0, step: int = 3) -> Path:
    """A training workdir holding a randomly initialised model of `config` (no training needed here)."""
    config = config.copy_and_resolve_references()
    config.unlock()
    config.data.cache = str(cache) if cache else ""
    model = build.build_model(config)
    size = config.data.face_size
    batch = {"frames": np.zeros((1, 1, size, size, 3), np.uint8)}
    if config.stage == "teacher":
        batch["audio"] = np.zeros((1, 1, 64, 100, 1), np.float32)
    variables = build.init_variables(model, batch, seed)
    state = create_state(variables, make_optimizer(config.optim, variables["params"]), jax.random.key(seed))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    checkpointer = Checkpointer(workdir / "checkpoints", async_save=False)
    checkpointer.save(step, state)
    checkpointer.close()
    return workdir


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory, cache) -> Path:
    return make_workdir(tmp_path_factory.mktemp("student"), recola_student.get_config("tiny"), cache)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """Synthetic recordings: a steady face, a 2-second face-absent span, no face at all, and garbage."""
    root = tmp_path_factory.mktemp("videos")
    steady = synthetic.SyntheticConfig(frame_width=FRAME, frame_height=FRAME, face_absent_fraction=0.0)
    away = synthetic.SyntheticConfig(
        frame_width=FRAME, frame_height=FRAME, face_absent_fraction=0.5, face_absent_span_s=(2.0, 2.0)
    )
    synthetic.generate_video(root, "steady", 40, 0, steady)
    info = synthetic.generate_video(root, "away", 100, 0, away)
    assert [s[1] - s[0] for s in info["face_absent_spans"]] == [50]  # one long span
    rng = np.random.default_rng(0)
    noise = (rng.integers(0, 255, (FRAME, FRAME, 3), dtype=np.uint8) for _ in range(20))
    synthetic.write_video(root / "noface.mp4", noise, steady)
    (root / "corrupt.mp4").write_bytes(rng.integers(0, 255, 4000, dtype=np.uint8).tobytes())
    folder = root / "recordings_video"
    return {
        "steady": folder / "steady.mp4",
        "away": folder / "away.mp4",
        "away_wav": root / "recordings_audio" / "away.wav",
        "away_latent": root / "latent" / "away.csv",
        "noface": root / "noface.mp4",
        "corrupt": root / "corrupt.mp4",
    }


@pytest.fixture(scope="module")
def predictor(student_dir) -> inference.Predictor:
    return inference.Predictor(inference.load_trained(student_dir), chunk_frames=CHUNK)


def one_pass(trained: inference.Trained, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Reference: every crop of the video at once, the retain policy as the training pipeline applies it
    (index of the last face), then one call of the network over the whole sequence."""
    settings, _ = inference.preprocess_settings(trained.config)
    cropper = inference.make_cropper(settings)
    crops, found = zip(*(cropper(frame) for frame in VideoReader(path, settings["fps"])), strict=True)
    found = np.asarray(found)
    last = np.maximum.accumulate(np.where(found, np.arange(len(found)), -1))
    frames = np.stack(crops)[np.maximum(last, 0)]
    frames[last < 0] = 0
    pred, _ = trained.model.apply(trained.variables, frames[None] / 255.0, train=False)
    return np.asarray(pred[0]), found


def test_chunked_prediction_equals_one_pass_over_the_whole_video(predictor, videos):
    result = predictor.predict(videos["away"])
    want, found = one_pass(predictor.trained, videos["away"])
    assert result.num_frames == 100 and result.pred.shape == (100, 2)
    np.testing.assert_array_equal(result.face_found, found)
    np.testing.assert_allclose(result.pred, want, atol=1e-5)


def test_long_face_absent_span_is_detected_and_the_last_face_retained(predictor, videos):
    latent = synthetic.read_latent_csv(videos["away_latent"])
    visible = np.asarray(latent["face_visible"], bool)
    settings = predictor.settings
    chunks = list(
        inference.face_chunks(
            videos["away"], predictor.cropper, fps=settings["fps"], chunk_frames=CHUNK, missing_face="retain"
        )
    )
    crops = np.concatenate([c for c, _ in chunks])
    found = np.concatenate([f for _, f in chunks])
    assert [len(f) for _, f in chunks] == [16] * 6 + [4]
    assert np.mean(found == visible) >= 0.95  # the detector agrees with the generator's ground truth
    spans = inference.absent_spans(found)
    start, stop = max(spans, key=lambda s: s[1] - s[0])
    assert stop - start >= 45
    # The span crosses chunk boundaries: every frame of it shows the face of the frame before it.
    for t in range(start, stop):
        np.testing.assert_array_equal(crops[t], crops[start - 1])
    black = np.concatenate(
        [
            c
            for c, _ in inference.face_chunks(
                videos["away"],
                predictor.cropper,
                fps=settings["fps"],
                chunk_frames=CHUNK,
                missing_face="black",
            )
        ]
    )
    assert not black[start:stop].any() and black[~found].max() == 0
    np.testing.assert_array_equal(black[found], crops[found])


def test_corrupt_and_faceless_videos_raise_errors_naming_the_file(predictor, videos):
    with pytest.raises(VideoError, match=r"corrupt\.mp4: cannot open video"):
        predictor.predict(videos["corrupt"])
    with pytest.raises(inference.PredictError, match=r"noface.mp4: no face found in any of its 20 frames"):
        predictor.predict(videos["noface"])
    with pytest.raises(ValueError, match="takes no audio"):
        predictor.predict(videos["steady"], audio=videos["away_wav"])


def test_cli_writes_csv_plot_summary_and_fails_only_the_bad_videos_without_audio_libraries(
    student_dir, videos, tmp_path
):
    out = tmp_path / "out"
    argv = [
        "pkd_jax.predict",
        f"--workdir={student_dir}",
        f"--video={videos['steady']}",
        str(videos["corrupt"]),
        str(videos["away"]),
        str(videos["noface"]),
        f"--out={out}",
        f"--chunk_frames={CHUNK}",
    ]
    # Run as `python -m pkd_jax.predict`, reporting at exit which audio libraries were imported.
    code = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print('AUDIO_MODULES', sorted(m for m in ('librosa', 'soundfile') if m in sys.modules)))\n"
        f"sys.argv = {argv!r}\n"
        "runpy.run_module('pkd_jax.predict', run_name='__main__', alter_sys=True)\n"
    )
    # From outside the checkout: the installed package alone must read the workdir (no `configs`).
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=outside_checkout_env(), capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 1, output  # two of four videos failed
    assert "AUDIO_MODULES []" in done.stdout
    assert f"{videos['corrupt']}: cannot open video" in output
    assert f"{videos['noface']}: no face found" in output
    assert "2 of 4 videos predicted, 2 failed" in done.stdout
    with open(out / "away.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["frame", "time_s", "valence", "arousal", "face_found"]
    assert len(rows) == 100 and rows[-1]["frame"] == "99" and rows[-1]["time_s"] == "3.960"
    assert 40 <= sum(r["face_found"] == "0" for r in rows) <= 60
    assert all(np.isfinite(float(r["valence"])) for r in rows)
    for name in ("steady", "away"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "corrupt.csv").exists() and not (out / "noface.csv").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert [v["ok"] for v in summary["videos"]] == [True, False, True, False]
    assert summary["videos"][0]["frames"] == 40 and summary["face_settings"].endswith("manifest.json")
    assert summary["provenance"]["command"][1:] == argv[1:] and summary["provenance"]["git"]["commit"]
    assert summary["model_provenance"] is None  # a workdir written without one (make_workdir)


def test_teacher_checkpoint_uses_the_audio_it_is_given(tmp_path, cache, videos):
    teacher_dir = make_workdir(tmp_path / "teacher", recola_teacher.get_config("tiny"), cache)
    teacher = inference.Predictor(
        inference.load_trained(checkpoint=teacher_dir / "checkpoints" / "3"), chunk_frames=CHUNK
    )
    assert teacher.trained.is_teacher and teacher.trained.step == 3
    speech = teacher.predict(videos["away"], audio=videos["away_wav"])
    samples, rate = soundfile.read(videos["away_wav"])
    silent = tmp_path / "silent.wav"
    soundfile.write(silent, np.zeros_like(samples), rate)
    quiet = teacher.predict(videos["away"], audio=silent)
    assert speech.pred.shape == quiet.pred.shape == (100, 2)
    assert np.abs(speech.pred - quiet.pred).max() > 1e-4  # the audio reaches the predictions
    # Without --audio the container's own track is used: the same speech, muxed as AAC into the mp4.
    muxed = mux_with_audio(videos["away"], samples, rate, tmp_path / "away_with_audio.mp4")
    container = teacher.predict(muxed)
    assert np.abs(container.pred - speech.pred).mean() < 0.5 * np.abs(quiet.pred - speech.pred).mean()
    # The synthetic mp4 has no audio track: the container is the default source, and its absence is named.
    with pytest.raises(inference.PredictError, match=r"steady\.mp4: no audio stream"):
        teacher.predict(videos["steady"])


def mux_with_audio(video: Path, samples: np.ndarray, rate: int, out: Path) -> Path:
    """`video`'s frames and a mono waveform encoded into one mp4 (H.264 or MPEG-4 video, AAC audio)."""
    import av

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(out), mode="w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width = stream.height = FRAME
        stream.pix_fmt = "yuv420p"
        sound = container.add_stream("aac", rate=rate)
        sound.layout = "mono"
        for rgb in VideoReader(video, 25):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
        for start in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(
                np.asarray(samples[start : start + 1024], np.float32)[None], format="flt", layout="mono"
            )
            frame.sample_rate, frame.pts = rate, start
            container.mux(sound.encode(frame))
        container.mux(sound.encode(None))
    return out


def test_bad_workdirs_caches_and_checkpoints_are_named(tmp_path, student_dir, cache, caplog):
    with pytest.raises(FileNotFoundError, match=r"nowhere/config\.json does not exist"):
        inference.load_trained(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="exactly one of"):
        inference.load_trained(student_dir, student_dir / "checkpoints" / "3")
    with pytest.raises(ValueError, match=r"<workdir>/checkpoints/<step>"):
        inference.load_trained(checkpoint=student_dir)
    # A config whose face size disagrees with the checkpoint: the VGG's fc no longer fits.
    other = tmp_path / "other"
    other.mkdir()
    config = json.loads((student_dir / "config.json").read_text())
    config["data"]["face_size"] = 64
    (other / "config.json").write_text(json.dumps(config))
    (other / "checkpoints").symlink_to(student_dir / "checkpoints")
    with pytest.raises(ValueError, match=r"checkpoint .*3/state does not match the student model .*fc"):
        inference.load_trained(other)
    # The training cache's face size must be the model's.
    config = inference.read_config(student_dir / "config.json")
    config.data.face_size = 48
    with pytest.raises(CacheError, match=r"manifest.json: faces of 32 px, the model takes 48 px"):
        inference.preprocess_settings(config, cache)
    # A model without its training cache falls back to preprocessing's defaults, and says so.
    config.data.face_size, config.data.cache, config.data.root = FACE_SIZE, "", ""
    with caplog.at_level("WARNING", logger="pkd_jax.inference"):
        settings, found = inference.preprocess_settings(config)
    assert found is None and settings == PreprocessConfig(face_size=FACE_SIZE).to_dict()
    assert "the config names none" in caplog.text
    with pytest.raises(CacheError, match=r"elsewhere/manifest\.json: no feature cache here"):
        inference.preprocess_settings(config, tmp_path / "elsewhere")
