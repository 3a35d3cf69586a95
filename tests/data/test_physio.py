"""Physiological signals: the CSV reader and its checks, the per-frame features, the synthetic ECG/EDA model,
and preprocessing a corpus with them (a copy of the tiny corpus given `recordings_physio/`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pkd_jax.data import synthetic
from pkd_jax.data.cache import Cache
from pkd_jax.data.corpus_to_cache import preprocess_corpus, resolve_physio
from pkd_jax.data.physio import PhysioError, PhysioRecording, read_physio
from pkd_jax.data.physio_features import PHYSIO_FEATURES, physio_features, r_peaks, rolling_rmssd
from pkd_jax.data.preprocess_config import PreprocessConfig, with_later_fields
from pkd_jax.data.synthetic.physio import synthesize_physio, write_physio_csv

FPS, RATE = 25, 250
SECONDS = 12
FRAMES = SECONDS * FPS
CONFIG = synthetic.SyntheticConfig()


def _physio(video_id: str, n_frames: int, seed: int = 0) -> tuple[synthetic.Physio, np.ndarray, np.ndarray]:
    """A synthetic recording's physiology, with its latent (valence, arousal)."""
    rngs = synthetic.video_rngs(seed, video_id)
    valence, arousal = synthetic.sample_emotion(rngs["emotion"], n_frames, CONFIG)
    return synthesize_physio(valence, arousal, rngs["physio"], CONFIG), valence, arousal


@pytest.fixture(scope="module")
def recording() -> synthetic.Physio:
    return _physio("train_1", FRAMES)[0]


def _write(
    path: Path, time: np.ndarray, ecg: np.ndarray, eda: np.ndarray, header: str = "time;ECG;EDA"
) -> Path:
    sep = ";" if ";" in header else ","
    rows = [header] + [sep.join(f"{x:.6f}" for x in row) for row in zip(time, ecg, eda, strict=True)]
    path.write_text("\n".join(rows) + "\n")
    return path


def _columns(recording: synthetic.Physio) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.arange(len(recording.ecg)) / RATE, recording.ecg.copy(), recording.eda.copy()


def test_a_written_recording_reads_back_and_gives_features(recording, tmp_path):
    path = tmp_path / "train_1.csv"
    write_physio_csv(path, recording)
    read = read_physio(path, sample_rate=RATE, num_frames=FRAMES)
    assert read.warnings == [] and read.duration_s == SECONDS and read.source == str(path)
    np.testing.assert_allclose(read.ecg, recording.ecg, atol=6e-5)
    np.testing.assert_allclose(read.eda, recording.eda, atol=6e-5)
    # Comma-separated, names in any case, another column and another order: the same recording.
    time, ecg, eda = _columns(recording)
    other = _write(tmp_path / "other.csv", eda, time, ecg, header="EDA,Time,ecg")
    again = read_physio(other, sample_rate=RATE, num_frames=FRAMES)
    np.testing.assert_allclose(again.ecg, recording.ecg, atol=1e-5)
    features = physio_features(read, FRAMES, FPS)
    assert features.shape == (FRAMES, len(PHYSIO_FEATURES)) and features.dtype == np.float32
    assert np.isfinite(features).all()
    heart_rate, rmssd, tonic, _ = features.mean(0)
    assert 50 < heart_rate < 110 and 5 < rmssd < 150 and 1 < tonic < 12
    # Three seconds (three beats) still give features; one second is too short, and says so.
    assert np.isfinite(physio_features(PhysioRecording(read.ecg[:750], read.eda[:750], RATE), 75)).all()
    with pytest.raises(PhysioError, match=r"train_1\.csv: \d heartbeats found in the ECG; at least 3 needed"):
        physio_features(PhysioRecording(read.ecg[:250], read.eda[:250], RATE, source=str(path)), 25)


def _nan(channel: int, start_s: float, stop_s: float) -> Callable:
    def corrupt(columns: list[np.ndarray]) -> list[np.ndarray]:
        columns[channel][round(start_s * RATE) : round(stop_s * RATE)] = np.nan
        return columns

    return corrupt


def _gap(columns: list[np.ndarray]) -> list[np.ndarray]:
    return [np.delete(c, np.s_[1000:1100]) for c in columns]


def _flat(columns: list[np.ndarray]) -> list[np.ndarray]:
    columns[1][:] = 0.5
    return columns


# name -> (how the good columns are changed, the header, words the error must contain)
BAD = {
    "truncated": (lambda c: [x[: 8 * RATE] for x in c], "time;ECG;EDA", ["covers 8.00 s", "12.00 s"]),
    "rate": (lambda c: [c[0] * RATE / 200, c[1], c[2]], "time;ECG;EDA", ["200 Hz", "expected 250 Hz"]),
    "irregular": (_gap, "time;ECG;EDA", ["irregular time column", "250 Hz"]),
    "offset": (lambda c: [c[0] + 3.0, c[1], c[2]], "time;ECG;EDA", ["time starts at 3 s"]),
    "long_nan": (
        _nan(1, 4.0, 6.0),
        "time;ECG;EDA",
        ["ECG is missing", "from 4.000 s to 5.996 s", "max_gap_s=1"],
    ),
    "nan_at_start": (_nan(2, 0.0, 1.5), "time;ECG;EDA", ["EDA is missing", "at the start"]),
    "all_nan": (_nan(2, 0.0, SECONDS), "time;ECG;EDA", ["EDA column has no finite value"]),
    "flat": (_flat, "time;ECG;EDA", ["ECG is flat"]),
    "missing_column": (lambda c: c, "time;ECG;GSR", ["['eda'] missing"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_recording_is_an_error_naming_the_file(recording, tmp_path, case):
    corrupt, header, words = BAD[case]
    path = _write(tmp_path / f"{case}.csv", *corrupt(list(_columns(recording))), header=header)
    with pytest.raises(PhysioError) as error:
        read_physio(path, sample_rate=RATE, num_frames=FRAMES)
    assert str(path) in str(error.value)
    for word in words:
        assert word in str(error.value)


def test_missing_file_and_non_numeric_values(tmp_path):
    with pytest.raises(PhysioError, match=r"nowhere\.csv: physiological recording missing"):
        read_physio(tmp_path / "nowhere.csv", sample_rate=RATE, num_frames=FRAMES)
    path = tmp_path / "text.csv"
    path.write_text("time;ECG;EDA\n0.000;0.1;5.0\n0.004;abc;5.0\n")
    with pytest.raises(PhysioError, match=r"text\.csv:3: non-numeric value 'abc'"):
        read_physio(path, sample_rate=RATE, num_frames=1)


def test_short_gaps_are_interpolated_and_long_recordings_trimmed(recording, tmp_path):
    time, ecg, eda = _columns(recording)
    time = np.r_[time, np.arange(len(time), len(time) + 3 * RATE) / RATE]  # 3 s past the video
    ecg, eda = np.r_[ecg, ecg[:750]], np.r_[eda, eda[:750]]
    ecg[1000:1100] = np.nan  # 0.4 s in the middle: interpolated
    eda[-50:] = np.inf  # 0.2 s at the very end: the last value held
    path = _write(tmp_path / "gappy.csv", time, ecg, eda)
    read = read_physio(path, sample_rate=RATE, num_frames=FRAMES)
    assert len(read.ecg) == SECONDS * RATE and np.isfinite(read.ecg).all() and np.isfinite(read.eda).all()
    np.testing.assert_allclose(read.ecg[1000:1100], np.linspace(ecg[999], ecg[1100], 102)[1:-1], atol=1e-5)
    gap, end, trimmed = read.warnings
    assert str(path) in gap and "ECG: 100 missing samples" in gap and "4.00 s" in gap
    assert "EDA: 50 missing samples" in end and "14.80 s" in end
    assert "15.00 s long, trimmed to the video's 12.00 s" in trimmed
    # Shorter than the video by less than the tolerance: kept as it is, the streams are cut to it.
    short = read_physio(path, sample_rate=RATE, num_frames=FRAMES + 80, tolerance_s=4.0)
    assert short.duration_s == pytest.approx(15.0)


def test_windowed_rmssd_is_neurokits(recording):
    import neurokit2 as nk

    peaks = r_peaks(recording.ecg, RATE)
    beats = peaks / RATE
    for centre in (3.5, 6.5):
        inside = peaks[(beats >= centre - 5) & (beats < centre + 5)]
        expected = nk.hrv_time(inside, sampling_rate=RATE)["HRV_RMSSD"].iloc[0]
        assert rolling_rmssd(beats, np.array([centre]))[0] == pytest.approx(expected, rel=1e-9)


def _late(x: np.ndarray, seconds: float) -> np.ndarray:
    k = round(seconds * FPS)
    return np.concatenate([np.full(k, x[0]), x[: len(x) - k]])


def test_synthetic_heart_rate_and_skin_conductance_follow_arousal():
    """Four 2-minute recordings: the heart rate from the R-peaks tracks arousal 3 s earlier (2 s latency,
    1 s low-pass, rate estimation) and the simulated rate; valence barely moves it; SCRs grow with arousal."""
    n = 120 * FPS
    rows, heart_rate, truth, high, low = [], [], [], [], []
    for video_id in ("train_1", "train_2", "train_3", "train_4"):
        physio, valence, arousal = _physio(video_id, n)
        features = physio_features(PhysioRecording(physio.ecg, physio.eda, RATE), n, FPS)
        a, v = _late(arousal, 3.0), _late(valence, 3.0)
        rows.append((np.corrcoef(features[:, 0], a)[0, 1], np.corrcoef(features[:, 0], v)[0, 1]))
        heart_rate.append(features[:, 0] - features[:, 0].mean())
        truth.append(np.stack([a - a.mean(), v - v.mean()], axis=1))
        per_second = features[:, 0].reshape(-1, FPS).mean(1)
        simulated = physio.heart_rate.reshape(-1, RATE).mean(1)
        assert np.abs(per_second - simulated).mean() < 2.0  # bpm
        phasic = np.abs(features[:, 3])
        high.append(phasic[a > np.median(a)].mean())
        low.append(phasic[a <= np.median(a)].mean())
    with_arousal, with_valence = np.mean(rows, axis=0)
    assert with_arousal > 0.75 and with_valence < with_arousal - 0.3, rows
    # Least squares on both: about 10-15 bpm per unit of arousal, about 1 per unit of valence.
    (per_arousal, per_valence), *_ = np.linalg.lstsq(np.concatenate(truth), np.concatenate(heart_rate))
    assert 8 < per_arousal < 18 and abs(per_valence) < 4, (per_arousal, per_valence)
    assert np.mean(high) > 1.4 * np.mean(low), (high, low)


def test_the_generator_writes_physiology_without_changing_the_rest(tmp_path):
    small = dataclasses.replace(CONFIG, frame_width=64, frame_height=64)
    for name, config in (("on", small), ("again", small), ("off", dataclasses.replace(small, physio=False))):
        synthetic.generate_corpus(tmp_path / name, 1, 0, 4.0, 3, config=config, progress=False)
    csv = "recordings_physio/train_1.csv"
    assert (tmp_path / "on" / csv).read_bytes() == (tmp_path / "again" / csv).read_bytes()
    assert not (tmp_path / "off" / "recordings_physio").exists()
    for rel in (
        "recordings_audio/train_1.wav",
        "latent/train_1.csv",
        "ratings_gold_standard/arousal/train_1.arff",
    ):
        assert (tmp_path / "on" / rel).read_bytes() == (tmp_path / "off" / rel).read_bytes()
    meta = json.loads((tmp_path / "on" / "synthetic.json").read_text())
    assert 55 < meta["recordings"][0]["physio"]["mean_heart_rate_bpm"] < 110
    assert "recordings_physio/<id>.csv" in (tmp_path / "on" / "README.txt").read_text()
    read = read_physio(tmp_path / "on" / csv, sample_rate=RATE, num_frames=100)
    assert read.duration_s == 4.0 and read.warnings == []


@pytest.fixture(scope="module")
def physio_run(tiny_corpus, tiny_frames, copy_corpus, tmp_path_factory):
    """(corpus, cache, manifest): the tiny corpus with physiology, dev_1's ECG missing for 2 s and
    train_2's EDA for 0.2 s, preprocessed with physio "auto"."""
    root = copy_corpus(tiny_corpus, tmp_path_factory.mktemp("physio_corpus"))
    (root / "recordings_physio").mkdir()
    for video_id in ("train_1", "train_2", "dev_1"):
        latent = synthetic.read_latent_csv(root / "latent" / f"{video_id}.csv")
        rng = synthetic.video_rngs(0, video_id)["physio"]
        physio = synthesize_physio(latent["valence"], latent["arousal"], rng, CONFIG)
        write_physio_csv(root / "recordings_physio" / f"{video_id}.csv", physio)
    for video_id, column, start, stop in (("dev_1", 1, 100, 600), ("train_2", 2, 400, 450)):
        path = root / "recordings_physio" / f"{video_id}.csv"
        lines = path.read_text().splitlines()
        for i in range(start + 1, stop + 1):
            fields = lines[i].split(";")
            fields[column] = "nan"
            lines[i] = ";".join(fields)
        path.write_text("\n".join(lines) + "\n")
    cache = tmp_path_factory.mktemp("physio_cache")
    config = PreprocessConfig(face_size=48)
    manifest = preprocess_corpus("synthetic", root, cache, config, progress=False, verbose=False)
    return root, cache, manifest


def test_preprocessing_writes_physio_features_and_fails_only_the_bad_file(physio_run, tiny_frames):
    root, cache_dir, manifest = physio_run
    assert manifest["config"]["physio"] == "yes"  # "auto", resolved for this corpus
    videos = manifest["videos"]
    assert {v: m["status"] for v, m in videos.items()} == {
        "train_1": "ok",
        "train_2": "ok",
        "dev_1": "failed",
    }
    reason = videos["dev_1"]["reason"]
    assert str(root / "recordings_physio" / "dev_1.csv") in reason and "ECG is missing" in reason
    (warning,) = videos["train_2"]["warnings"]
    assert "train_2.csv: EDA: 50 missing samples" in warning
    cache = Cache(cache_dir)
    assert cache.has_physio
    video = cache.video("train_1")
    assert video.physio is not None and video.physio.shape == (tiny_frames, 4)
    assert video.physio.dtype == np.float32 and np.isfinite(video.physio).all()
    assert videos["train_1"]["sources"]["physio"] == str(root / "recordings_physio" / "train_1.csv")


def test_physio_settings_resolve_or_fail_clearly(tiny_corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"recordings_physio: folder missing, and physio='yes'"):
        preprocess_corpus(
            "synthetic", tiny_corpus, tmp_path, PreprocessConfig(face_size=48, physio="yes"), verbose=False
        )
    assert not (tmp_path / "manifest.json").exists()
    assert resolve_physio("synthetic", tiny_corpus, PreprocessConfig()).physio == "no"
    with pytest.raises(ValueError, match="'affwild2' has no physiological signals"):
        resolve_physio("affwild2", tmp_path, PreprocessConfig(physio="yes"))
    assert resolve_physio("affwild2", tmp_path, PreprocessConfig()).physio == "no"
    with pytest.raises(ValueError, match="physio='maybe'"):
        PreprocessConfig(physio="maybe")
    # A cache written before physiological signals existed reads as without them.
    assert with_later_fields({"face_size": 48})["physio"] == "no"
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "manifest.json").write_text(json.dumps({"version": 1, "config": {}, "videos": {}}))
    assert not Cache(tmp_path / "old").has_physio
