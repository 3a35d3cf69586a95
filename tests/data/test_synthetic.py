"""Tests for the synthetic RECOLA-layout corpus generator and the rating-file readers."""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import soundfile

from pkd_jax.data import recola_format, synthetic

FPS = 25
SECONDS = 12.0
N_FRAMES = round(SECONDS * FPS)
SEED = 3
# Small frames keep the suite fast; many absent frames make the detector check meaningful.
CONFIG = synthetic.SyntheticConfig(frame_width=128, frame_height=128, face_absent_fraction=0.15)
IDS = ["train_1", "train_2", "dev_1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    ids = synthetic.generate_corpus(out, 2, 1, SECONDS, SEED, config=CONFIG, progress=False)
    assert ids == IDS
    return out


def _decode(path: Path) -> tuple[np.ndarray, Fraction]:
    """All frames and the average frame rate (read while the container is open: PyAV 19 refuses after)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return frames, stream.average_rate


def test_layout_and_ids(corpus: Path) -> None:
    files = {str(p.relative_to(corpus)) for p in corpus.rglob("*") if p.is_file()}
    expected = {"README.txt", "synthetic.json"}
    for vid in IDS:
        expected |= {
            f"recordings_video/{vid}.mp4",
            f"recordings_audio/{vid}.wav",
            f"ratings_gold_standard/arousal/{vid}.arff",
            f"ratings_gold_standard/valence/{vid}.arff",
            f"latent/{vid}.csv",
            f"recordings_physio/{vid}.csv",
        }
    assert files == expected
    meta = json.loads((corpus / "synthetic.json").read_text())
    assert meta["ids"] == IDS and meta["seed"] == SEED
    assert synthetic.SyntheticConfig.from_dict(meta["config"]) == CONFIG


def test_arff_and_latent_one_row_per_frame(corpus: Path) -> None:
    text = (corpus / "ratings_gold_standard/arousal/train_1.arff").read_text()
    for line in ("@attribute Instance_name string", "@attribute frameTime numeric", "@data"):
        assert line in text
    assert "'train_1',0.04," in text
    for dim in synthetic.DIMENSIONS:
        times, values = recola_format.read_arff_gold(corpus / f"ratings_gold_standard/{dim}/dev_1.arff")
        assert len(times) == N_FRAMES
        np.testing.assert_allclose(times, np.arange(N_FRAMES) * 0.04, atol=1e-9)
        assert np.all(np.abs(values) <= 1.0)
    latent = synthetic.read_latent_csv(corpus / "latent/dev_1.csv")
    np.testing.assert_array_equal(latent["frame"], np.arange(N_FRAMES))
    assert (corpus / "latent/dev_1.csv").read_text().startswith(synthetic.LATENT_HEADER + "\n")


def test_media_decode_with_right_lengths(corpus: Path) -> None:
    frames, rate = _decode(corpus / "recordings_video/train_2.mp4")
    assert frames.shape == (N_FRAMES, 128, 128, 3)
    assert rate == FPS
    info = soundfile.info(str(corpus / "recordings_audio/train_2.wav"))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert info.frames == N_FRAMES * 640


def test_deterministic_and_independent_of_other_ids(corpus: Path, tmp_path: Path) -> None:
    # Same seed and id, generated alone: every file of the recording byte-identical (video, audio,
    # ratings, latent, physiology), so a fresh clone regenerates the corpus behind the documented numbers.
    synthetic.generate_video(tmp_path, "train_2", N_FRAMES, SEED, CONFIG)
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("train_2.*"))
    assert {p.parts[0] for p in files} >= {
        "recordings_video",
        "recordings_audio",
        "latent",
        "ratings_gold_standard",
    }
    for rel in files:
        assert (tmp_path / rel).read_bytes() == (corpus / rel).read_bytes(), rel
    synthetic.generate_video(tmp_path / "other", "train_2", N_FRAMES, SEED + 1, CONFIG)
    other = (tmp_path / "other/latent/train_2.csv").read_bytes()
    assert other != (corpus / "latent/train_2.csv").read_bytes()


def test_face_detected_only_when_visible(corpus: Path) -> None:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    visible_hits, absent_hits = [], []
    for vid in IDS:
        frames, _ = _decode(corpus / f"recordings_video/{vid}.mp4")
        visible = synthetic.read_latent_csv(corpus / f"latent/{vid}.csv")["face_visible"]
        found = np.array(
            [len(cascade.detectMultiScale(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), 1.1, 5)) > 0 for f in frames]
        )
        assert found[visible].mean() >= 0.8, vid
        visible_hits.append(found[visible])
        absent_hits.append(found[~visible])
    absent = np.concatenate(absent_hits)
    assert len(absent) >= 0.1 * len(IDS) * N_FRAMES  # The spans were actually placed.
    assert absent.mean() <= 0.02


def test_absent_spans_cover_configured_fraction() -> None:
    rng = np.random.default_rng(0)
    spans = synthetic.sample_absent_spans(rng, 1500, synthetic.SyntheticConfig())
    covered = sum(s.stop - s.start for s in spans)
    assert covered == 45
    assert all(a.stop < b.start for a, b in itertools.pairwise(spans))


def test_gold_is_lagged_latent(corpus: Path) -> None:
    max_lag = 100
    score = np.zeros(max_lag + 1)
    for vid in IDS:
        latent = synthetic.read_latent_csv(corpus / f"latent/{vid}.csv")
        for dim in synthetic.DIMENSIONS:
            _, gold = recola_format.read_arff_gold(corpus / f"ratings_gold_standard/{dim}/{vid}.arff")
            # Differencing removes the slow trends that flatten a plain cross-correlation peak.
            dg, dx = np.diff(gold), np.diff(latent[dim])
            for k in range(max_lag + 1):
                score[k] += np.corrcoef(dg[k:], dx[: len(dx) - k])[0, 1]
    assert abs(int(np.argmax(score)) - round(CONFIG.annotator_lag_s * FPS)) <= 3


def test_audio_carries_arousal() -> None:
    config = synthetic.SyntheticConfig()
    rngs = synthetic.video_rngs(0, "train_1")
    valence, arousal = synthetic.sample_emotion(rngs["emotion"], 60 * FPS, config)
    voice = synthetic.sample_voice(rngs["voice"], config)
    wave, jaw = synthetic.synthesize_audio(valence, arousal, rngs["audio"], config, voice)
    assert wave.shape == (60 * 16000,) and jaw.shape == (60 * FPS,)
    energy_db = 10 * np.log10((wave.astype(np.float64).reshape(60, -1) ** 2).mean(axis=1))
    assert np.corrcoef(energy_db, arousal.reshape(60, FPS).mean(axis=1))[0, 1] > 0.5


def _write_ratings(root: Path, arff: dict[str, np.ndarray], csv: dict[str, np.ndarray]) -> None:
    """Writes (valence, arousal) trajectories in both RECOLA forms."""
    gold = root / "ratings_gold_standard"
    for dim in synthetic.DIMENSIONS:
        (gold / dim).mkdir(parents=True, exist_ok=True)
    for vid, (valence, arousal) in arff.items():
        times = np.arange(len(valence)) / FPS
        recola_format.write_arff_gold(gold / f"arousal/{vid}.arff", vid, times, arousal)
        recola_format.write_arff_gold(gold / f"valence/{vid}.arff", vid, times, valence)
    for vid, (valence, arousal) in csv.items():
        recola_format.write_csv_gold(gold / f"{vid}.csv", np.stack([arousal, valence], axis=1))


def test_ratings_from_reproduces_trajectories(tmp_path: Path) -> None:
    t = np.arange(60) / FPS
    given = {
        "train_7": (0.5 * np.sin(t), 0.3 * np.cos(2 * t)),
        "dev_3": (np.linspace(-0.9, 0.9, 75), np.linspace(0.8, -0.8, 75)),
    }
    _write_ratings(tmp_path / "recola", {"train_7": given["train_7"]}, {"dev_3": given["dev_3"]})
    small = dataclasses.replace(CONFIG, frame_width=64, frame_height=64)
    ids = synthetic.generate_corpus(
        tmp_path / "out", 5, 5, 99.0, 0, ratings_from=tmp_path / "recola", config=small, progress=False
    )
    assert ids == ["dev_3", "train_7"]
    for vid, (valence, arousal) in given.items():
        latent = synthetic.read_latent_csv(tmp_path / f"out/latent/{vid}.csv")
        np.testing.assert_allclose(latent["valence"], valence, atol=1e-6)
        np.testing.assert_allclose(latent["arousal"], arousal, atol=1e-6)
        info = soundfile.info(str(tmp_path / f"out/recordings_audio/{vid}.wav"))
        assert info.frames == len(valence) * 640


def test_ratings_from_errors_name_the_file(tmp_path: Path) -> None:
    _write_ratings(tmp_path, {"train_1": (np.zeros(10), np.zeros(10))}, {})
    (tmp_path / "ratings_gold_standard/valence/train_1.arff").unlink()
    with pytest.raises(ValueError, match=r"valence/train_1\.arff"):
        synthetic.load_ratings(tmp_path)
    bad = tmp_path / "ratings_gold_standard/dev_1.csv"
    bad.write_text("0.1;0.2\nabc;0.3\n")
    (tmp_path / "ratings_gold_standard/arousal/train_1.arff").unlink()
    with pytest.raises(ValueError, match=r"dev_1\.csv"):
        synthetic.generate_corpus(tmp_path / "out", 1, 1, 1.0, 0, ratings_from=tmp_path, progress=False)
    with pytest.raises(FileNotFoundError):
        synthetic.load_ratings(tmp_path / "nothing_here")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("@relation x\n@attribute Instance_name string\n@attribute frameTime numeric\n@data\n'a',0.0\n",
         "missing attribute 'GoldStandard'"),
        ("@relation x\n@attribute Instance_name string\n@attribute frameTime numeric\n"
         "@attribute GoldStandard numeric\n@data\n'a',0.00,0.5\n'a',0.04,oops\n", "non-numeric"),
        ("@relation x\n@attribute Instance_name string\n@attribute frameTime numeric\n"
         "@attribute GoldStandard numeric\n@data\n'a',0.00,nan\n", "non-finite"),
        ("@relation x\n@attribute Instance_name string\n@attribute frameTime numeric\n"
         "@attribute GoldStandard numeric\n", "no @data"),
    ],
)  # fmt: skip
def test_arff_reader_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.arff"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        recola_format.read_arff_gold(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [("0.1;0.2\n0.3\n", "expected 'arousal;valence'"), ("0.1;x\n", "non-numeric"),
     ("0.1;NaN\n", "non-finite"), ("\n", "no data rows")],
)  # fmt: skip
def test_csv_reader_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        recola_format.read_csv_gold(path)
    assert str(path) in str(err.value)


def test_readers_round_trip(tmp_path: Path) -> None:
    values = np.array([0.1, -0.25, 1.0])
    recola_format.write_arff_gold(tmp_path / "a.arff", "x", np.arange(3) * 0.04, values)
    times, read = recola_format.read_arff_gold(tmp_path / "a.arff")
    np.testing.assert_allclose(read, values)
    np.testing.assert_allclose(times, [0.0, 0.04, 0.08])
    table = np.stack([values, -values], axis=1)
    recola_format.write_csv_gold(tmp_path / "a.csv", table)
    np.testing.assert_allclose(recola_format.read_csv_gold(tmp_path / "a.csv"), table)


def test_workers_match_serial(tmp_path: Path) -> None:
    # No physiology: each spawned worker would import neurokit2 (seconds); tests/data/test_physio.py has it.
    small = dataclasses.replace(CONFIG, frame_width=64, frame_height=64, physio=False)
    for workers in (1, 2):
        synthetic.generate_corpus(tmp_path / f"w{workers}", 1, 1, 2.0, 5, config=small, workers=workers)
    for vid in ("train_1", "dev_1"):
        rel = f"recordings_audio/{vid}.wav"
        assert (tmp_path / "w1" / rel).read_bytes() == (tmp_path / "w2" / rel).read_bytes()


def test_cli(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "pkd_jax.data.synthetic", f"--out={tmp_path}", "--train=1", "--dev=1"]
    # --nophysio: a quicker start (no neurokit2 to import); tests/data/test_physio.py has the physiology.
    cmd += ["--test=1", "--seconds=1", "--seed=4", "--frame_size=64", "--nophysio"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    videos = sorted(p.name for p in (tmp_path / "recordings_video").iterdir())
    assert videos == ["dev_1.mp4", "test_1.mp4", "train_1.mp4"]
    assert (tmp_path / "ratings_gold_standard/arousal/test_1.arff").is_file()
    assert not (tmp_path / "recordings_physio").exists()


def test_data_package_does_not_import_jax() -> None:
    code = "import sys, pkd_jax.data.synthetic, pkd_jax.data.recola_format; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"
