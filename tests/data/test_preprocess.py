"""Preprocessing: synthetic corpus -> cache (shapes, alignment, labels, detection, resumability), the CSV
label form, the Aff-Wild2 reader, and the building blocks (resampling, reconciliation, crops, log-mel)."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from pkd_jax.data import recola_format, synthetic
from pkd_jax.data.align import Length, LengthMismatchError, reconcile_lengths
from pkd_jax.data.audio import log_mel
from pkd_jax.data.cache import Cache
from pkd_jax.data.corpus_to_cache import preprocess_corpus
from pkd_jax.data.faces import create_detector, square_crop_box
from pkd_jax.data.preprocess_config import PreprocessConfig
from pkd_jax.data.video import VideoReader, select_nearest

IDS = ("train_1", "train_2", "dev_1")


def load(cache_dir: Path, video_id: str, name: str) -> np.ndarray:
    return np.load(cache_dir / "videos" / video_id / f"{name}.npy")


# ------------------------------------------------------------------------------------------------
# Synthetic corpus end to end.


def test_manifest_and_aligned_shapes(tiny_cache, tiny_config, tiny_frames):
    cache_dir, manifest = tiny_cache
    assert manifest["dataset"] == "synthetic" and manifest["config"] == tiny_config.to_dict()
    assert list(manifest["videos"]) == list(IDS)
    cache = Cache(cache_dir)
    assert cache.ids("train") == ["train_1", "train_2"] and cache.ids("dev") == ["dev_1"]
    assert cache.failures() == {}
    s = tiny_config.face_size
    for video_id in IDS:
        meta = manifest["videos"][video_id]
        assert meta["status"] == "ok" and meta["warnings"] == []
        video = cache.video(video_id)
        t = video.num_frames
        assert t == meta["num_frames"] == tiny_frames
        assert video.frames.shape == (t, s, s, 3) and video.frames.dtype == np.uint8
        assert video.face_found.shape == (t,) and video.face_found.dtype == bool
        assert video.logmel.shape == (4 * t, tiny_config.n_mels) and video.logmel.dtype == np.float16
        assert video.labels.shape == (t, 2) and video.labels.dtype == np.float32
        assert video.label_mask.shape == (t,) and video.label_mask.all()
        assert np.isfinite(video.logmel.astype(np.float32)).all()
        assert meta["face_found_fraction"] == pytest.approx(video.face_found.mean())
        # No face: an all-black crop.
        assert not video.frames[~video.face_found].any()
        assert video.frames[video.face_found].reshape(int(video.face_found.sum()), -1).max(1).min() > 0


def test_labels_are_the_arff_values_in_valence_arousal_order(tiny_cache, tiny_corpus):
    cache_dir, _ = tiny_cache
    for video_id in IDS:
        labels = load(cache_dir, video_id, "labels")
        for column, dim in enumerate(("valence", "arousal")):
            _, values = recola_format.read_arff_gold(
                tiny_corpus / "ratings_gold_standard" / dim / f"{video_id}.arff"
            )
            np.testing.assert_array_equal(labels[:, column], values.astype(np.float32))


def test_face_found_follows_the_latent_visibility(tiny_cache, tiny_corpus):
    cache_dir, _ = tiny_cache
    found, visible = [], []
    for video_id in IDS:
        found.append(load(cache_dir, video_id, "face_found"))
        visible.append(synthetic.read_latent_csv(tiny_corpus / "latent" / f"{video_id}.csv")["face_visible"])
    found, visible = np.concatenate(found), np.concatenate(visible)
    assert (~visible).sum() >= 20  # enough absent frames for the second check to mean something
    hit, false_alarm = found[visible].mean(), found[~visible].mean()
    print(f"face found: {100 * hit:.1f}% of visible frames, {100 * false_alarm:.1f}% of absent frames")
    assert hit >= 0.9 and false_alarm <= 0.05


def test_audio_stats_and_logmel_follow_the_wav(tiny_cache, tiny_corpus, tiny_config):
    cache_dir, manifest = tiny_cache
    stats = manifest["audio_stats"]
    assert len(stats["mean"]) == len(stats["std"]) == tiny_config.n_mels
    assert np.isfinite(stats["mean"]).all() and np.isfinite(stats["std"]).all() and min(stats["std"]) > 0
    # Loudness per video frame from the wav and from the cached log-mel agree: frame t <-> mel [4t, 4t+4).
    import soundfile

    wave, _ = soundfile.read(tiny_corpus / "recordings_audio" / "train_1.wav", dtype="float32")
    rms = np.log(np.mean(wave.reshape(-1, 640) ** 2, axis=1) + 1e-8)
    mel = np.exp(load(cache_dir, "train_1", "logmel").astype(np.float32))
    mel_energy = np.log(mel.sum(1).reshape(-1, 4).mean(1))
    assert np.corrcoef(rms, mel_energy)[0, 1] > 0.9


def test_second_run_skips_everything(tiny_cache, tiny_corpus, tiny_config, capsys):
    cache_dir, manifest = tiny_cache
    stamps = {v: (cache_dir / "videos" / v / "meta.json").stat().st_mtime_ns for v in IDS}
    again = preprocess_corpus("synthetic", tiny_corpus, cache_dir, tiny_config, progress=False)
    assert "0 processed now, 3 skipped" in capsys.readouterr().out
    assert again["videos"] == manifest["videos"] and again["audio_stats"] == manifest["audio_stats"]
    assert stamps == {v: (cache_dir / "videos" / v / "meta.json").stat().st_mtime_ns for v in IDS}


def test_resuming_with_another_config_is_refused(tiny_cache, tiny_corpus):
    with pytest.raises(ValueError, match="another configuration"):
        preprocess_corpus(
            "synthetic", tiny_corpus, tiny_cache[0], PreprocessConfig(face_size=64), verbose=False
        )


def test_half_written_videos_are_redone(tiny_cache, tiny_corpus, tiny_config, tmp_path, capsys):
    cache_dir = shutil.copytree(tiny_cache[0], tmp_path / "cache")
    videos = cache_dir / "videos"
    # An interrupted write: the temporary directory never got renamed ...
    (videos / "train_1").rename(videos / ".train_1.x7k2")
    (videos / ".train_1.x7k2" / "meta.json").unlink()
    # ... and a final directory without its meta.json.
    (videos / "dev_1" / "meta.json").unlink()
    manifest = preprocess_corpus("synthetic", tiny_corpus, cache_dir, tiny_config, progress=False)
    assert "2 processed now, 1 skipped" in capsys.readouterr().out
    assert all(m["status"] == "ok" for m in manifest["videos"].values())
    assert not list(videos.glob(".*"))  # leftovers cleaned up
    for video_id in ("train_1", "dev_1"):
        np.testing.assert_array_equal(
            load(cache_dir, video_id, "labels"), load(tiny_cache[0], video_id, "labels")
        )
        np.testing.assert_array_equal(
            load(cache_dir, video_id, "face_found"), load(tiny_cache[0], video_id, "face_found")
        )


def test_csv_label_form_gives_the_same_labels(tiny_cache, tiny_corpus, tiny_config, tmp_path, copy_corpus):
    src = copy_corpus(tiny_corpus, tmp_path / "corpus", ids=("train_1",))
    gold = src / "ratings_gold_standard"
    valence = recola_format.read_arff_gold(gold / "valence" / "train_1.arff")[1]
    arousal = recola_format.read_arff_gold(gold / "arousal" / "train_1.arff")[1]
    recola_format.write_csv_gold(gold / "train_1.csv", np.stack([arousal, valence], axis=1))
    shutil.rmtree(gold / "valence")
    shutil.rmtree(gold / "arousal")
    manifest = preprocess_corpus(
        "synthetic", src, tmp_path / "cache", tiny_config, progress=False, verbose=False
    )
    assert manifest["videos"]["train_1"]["status"] == "ok"
    assert manifest["videos"]["train_1"]["sources"]["labels"] == [str(gold / "train_1.csv")]
    np.testing.assert_array_equal(
        load(tmp_path / "cache", "train_1", "labels"), load(tiny_cache[0], "train_1", "labels")
    )


# ------------------------------------------------------------------------------------------------
# Aff-Wild2.


def write_video(
    path: Path,
    n_frames: int,
    fps: int,
    audio: np.ndarray | None = None,
    sr: int = 16000,
    codec: str = "mpeg4",
) -> None:
    """A small video whose frame i is grey level 4 * i, with an optional AAC audio track."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=sr)
            astream.layout = "mono"
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 4 * i, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
        if astream is not None:
            block = 1024
            for start in range(0, len(audio), block):
                chunk = audio[start : start + block].astype(np.float32)[None, :]
                frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                frame.sample_rate = sr
                frame.pts = start
                container.mux(astream.encode(frame))
            container.mux(astream.encode())


@pytest.fixture
def affwild2_tree(tmp_path: Path) -> Path:
    root = tmp_path / "affwild2"
    (root / "videos" / "batch1").mkdir(parents=True)
    t = np.arange(2 * 16000) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) * (t > 1.0)  # silence, then a tone: alignment is visible
    write_video(root / "videos" / "batch1" / "talk.mp4", 60, 30, tone)  # 2 s at 30 fps, shared by two people
    write_video(root / "videos" / "solo.mp4", 50, 25, 0.1 * np.sin(2 * np.pi * 200 * t))
    va = root / "VA_Estimation_Challenge"
    rng = np.random.default_rng(0)
    for split, video_id, n in (
        ("Train_Set", "talk_left", 60),
        ("Train_Set", "talk_right", 60),
        ("Validation_Set", "solo", 50),
    ):
        (va / split).mkdir(parents=True, exist_ok=True)
        labels = rng.uniform(-1, 1, (n, 2)).round(3)
        labels[5:10] = -5  # invalid frames
        (va / split / f"{video_id}.txt").write_text(
            "valence,arousal\n" + "".join(f"{v},{a}\n" for v, a in labels)
        )
        crops = root / "cropped_aligned" / video_id
        crops.mkdir(parents=True)
        for i in range(1, n + 1):
            if i % 7:  # every 7th crop is missing
                cv2.imwrite(str(crops / f"{i:05d}.jpg"), np.full((112, 112, 3), (i * 3) % 250 + 5, np.uint8))
    return root


def read_va(path: Path) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)


def test_affwild2_reader(affwild2_tree, tmp_path):
    config = PreprocessConfig(face_size=48)
    out = tmp_path / "cache"
    manifest = preprocess_corpus("affwild2", affwild2_tree, out, config, progress=False, verbose=False)
    videos = manifest["videos"]
    assert {v: m["status"] for v, m in videos.items()} == {
        "talk_left": "ok",
        "talk_right": "ok",
        "solo": "ok",
    }
    assert {v: m["split"] for v, m in videos.items()} == {
        "talk_left": "train",
        "talk_right": "train",
        "solo": "dev",
    }
    # 30 fps source, 60 rows -> 50 frames at 25 fps; output frame k is source frame round(1.2 k).
    index = np.floor(np.arange(50) * 30 / 25 + 0.5).astype(int)
    for video_id, n, idx in (("talk_left", 50, index), ("solo", 50, np.arange(50))):
        raw = read_va(
            affwild2_tree
            / "VA_Estimation_Challenge"
            / ("Validation_Set" if video_id == "solo" else "Train_Set")
            / f"{video_id}.txt"
        )
        labels, mask = load(out, video_id, "labels"), load(out, video_id, "label_mask")
        assert labels.shape == (n, 2) and mask.shape == (n,) and videos[video_id]["num_frames"] == n
        np.testing.assert_array_equal(mask, ~(raw[idx] == -5).any(1))
        np.testing.assert_allclose(labels[mask], raw[idx][mask], atol=1e-6)
        found = load(out, video_id, "face_found")
        np.testing.assert_array_equal(found, (idx + 1) % 7 != 0)
        frames = load(out, video_id, "frames")
        assert frames.shape == (n, 48, 48, 3) and not frames[~found].any()
        expected = ((idx + 1) * 3) % 250 + 5
        np.testing.assert_allclose(frames[found][:, 24, 24, 0], expected[found], atol=3)
        assert load(out, video_id, "logmel").shape == (4 * n, 64)
    # Both people of a recording share its audio.
    np.testing.assert_array_equal(load(out, "talk_left", "logmel"), load(out, "talk_right", "logmel"))
    energy = load(out, "talk_left", "logmel").astype(np.float32).max(1)
    assert energy[:90].max() < energy[110:].min()  # silence in the first second, the tone after it


def test_affwild2_missing_recording_fails_naming_it(affwild2_tree, tmp_path):
    (affwild2_tree / "videos" / "solo.mp4").unlink()
    manifest = preprocess_corpus(
        "affwild2",
        affwild2_tree,
        tmp_path / "c",
        PreprocessConfig(face_size=48),
        progress=False,
        verbose=False,
    )
    assert manifest["videos"]["solo"]["status"] == "failed"
    assert "videos/solo.mp4|.avi" in manifest["videos"]["solo"]["reason"]
    assert manifest["videos"]["talk_left"]["status"] == "ok"


# ------------------------------------------------------------------------------------------------
# Building blocks.


@pytest.mark.parametrize("source_fps", [25, 30, 20, 50])
def test_select_nearest_resamples_by_timestamp(source_fps):
    n = 3 * source_fps  # 3 s
    out = list(select_nearest(((i / source_fps, i) for i in range(n)), 25, 1 / source_fps))
    assert len(out) == 75
    expected = [min(n - 1, int(np.floor(k * source_fps / 25 + 0.5 - 1e-9))) for k in range(75)]
    assert out == expected


def test_select_nearest_uses_timestamps_not_indices():
    times = [0.0, 0.04, 0.2, 0.24]  # a gap: frames 0.08-0.16 were dropped
    out = list(select_nearest(((t, i) for i, t in enumerate(times)), 25, 0.04))
    assert out == [0, 1, 1, 2, 2, 2, 3]


def test_video_reader_resamples_a_30fps_file(tmp_path):
    path = tmp_path / "v.mkv"
    write_video(path, 30, 30, codec="ffv1")  # lossless: grey levels identify the frames
    reader = VideoReader(path, 25)
    grey = [int(np.median(f[..., 0])) for f in reader]
    assert reader.source_frames == 30 and reader.source_fps == 30
    expected = 4 * np.floor(np.arange(25) * 30 / 25 + 0.5)
    np.testing.assert_allclose(grey, expected, atol=1)


def test_reconcile_lengths():
    files = {"video": Length(150, "v.mp4"), "labels": Length(147, "l.arff"), "audio": Length(150.02, "a.wav")}
    n, warnings = reconcile_lengths("x", files, tolerance_fraction=0.02, tolerance_frames=25)
    assert n == 147 and len(warnings) == 1 and "l.arff" in warnings[0] and "147" in warnings[0]
    same = {"video": Length(150, "v"), "audio": Length(149.8, "a")}
    assert reconcile_lengths("x", same, tolerance_fraction=0.02, tolerance_frames=25) == (150, [])
    short = {"video": Length(150, "v.mp4"), "labels": Length(100, "l.arff")}
    with pytest.raises(LengthMismatchError, match=r"l\.arff"):
        reconcile_lengths("x", short, tolerance_fraction=0.02, tolerance_frames=25)
    long_video = {"video": Length(10000, "v"), "labels": Length(9850, "l")}  # 150 <= 2% of 10000
    assert reconcile_lengths("x", long_video, tolerance_fraction=0.02, tolerance_frames=25)[0] == 9850


def test_square_crop_box_is_square_and_inside():
    assert square_crop_box((40, 40, 20, 20), 0.5, 100, 100) == (30, 30, 40, 40)
    assert square_crop_box((0, 0, 20, 30), 0.5, 100, 100) == (0, 0, 60, 60)  # shifted to fit
    assert square_crop_box((90, 60, 30, 30), 2.0, 100, 120) == (20, 0, 100, 100)  # shrunk to the height


def test_detector_registry():
    assert create_detector("haar", detect_width=160).detect(np.zeros((120, 160, 3), np.uint8)) is None
    with pytest.raises(ValueError, match="looks like an import path"):  # names only, nothing imported
        create_detector("pkd_jax.data.faces:HaarFaceDetector")
    with pytest.raises(ValueError, match="'nope' is not registered"):
        create_detector("nope")


def test_log_mel_frames_align_with_samples():
    sr, hop = 16000, 160
    samples = np.zeros(sr, np.float32)  # 1 s = 25 video frames = 100 mel frames
    samples[640 * 10 : 640 * 15] = np.sin(2 * np.pi * 1000 * np.arange(640 * 5) / sr)  # video frames 10-14
    mel = log_mel(samples, sample_rate=sr, n_fft=512, hop=hop, n_mels=64, fmin=0, fmax=8000, log_floor=1e-6)
    assert mel.shape == (100, 64) and mel.dtype == np.float16
    energy = np.exp(mel.astype(np.float32)).sum(1)
    inside = energy[40:60].sum() / energy.sum()
    assert inside > 0.97
    assert energy[41:59].min() > 100 * energy[:38].max()


def test_config_is_checked_and_serialised():
    with pytest.raises(ValueError, match="multiple of fps"):
        PreprocessConfig(hop=150)
    config = PreprocessConfig()
    assert json.loads(json.dumps(config.to_dict())) == config.to_dict()
    assert config.mel_per_frame == 4 and config.samples_per_frame == 640
