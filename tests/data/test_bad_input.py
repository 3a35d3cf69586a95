"""Broken inputs fail only their own video, with a reason naming the file; the CLI exits non-zero.

One corrupted copy of the tiny corpus is preprocessed once through the CLI (two worker processes):
    train_1  video truncated to half its bytes          -> failed, names train_1.mp4
    train_2  wav missing                                -> failed, names train_2.wav
    train_3  a NaN in its valence ARFF                  -> failed, names valence/train_3.arff
    dev_1    rating files 60 rows for a 150-frame video -> failed, names dev_1.arff
    dev_2    rating files 3 rows short                  -> ok, truncated to 147 frames with a warning
    train_4  intact                                     -> ok
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DIMS = ("arousal", "valence")


def _files(root: Path, video_id: str) -> list[Path]:
    return [
        root / "recordings_video" / f"{video_id}.mp4",
        root / "recordings_audio" / f"{video_id}.wav",
        *(root / "ratings_gold_standard" / d / f"{video_id}.arff" for d in DIMS),
    ]


def _clone(root: Path, src_id: str, dst_id: str) -> None:
    for src, dst in zip(_files(root, src_id), _files(root, dst_id), strict=True):
        shutil.copy2(src, dst)


def _keep_rows(path: Path, n_rows: int) -> None:
    header, data = path.read_text().split("@data", 1)
    rows = [r for r in data.splitlines() if r.strip()]
    path.write_text(header + "@data\n\n" + "\n".join(rows[:n_rows]) + "\n")


@pytest.fixture(scope="module")
def bad_run(tiny_corpus, tiny_config, tmp_path_factory, copy_corpus):
    """(corpus, cache, completed CLI process) for the corrupted corpus described above."""
    root = copy_corpus(tiny_corpus, tmp_path_factory.mktemp("bad_corpus"))
    _clone(root, "train_1", "train_3")
    _clone(root, "train_2", "train_4")
    _clone(root, "dev_1", "dev_2")
    video = root / "recordings_video" / "train_1.mp4"
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    (root / "recordings_audio" / "train_2.wav").unlink()
    arff = root / "ratings_gold_standard" / "valence" / "train_3.arff"
    lines = arff.read_text().splitlines()
    lines[-40] = lines[-40].rsplit(",", 1)[0] + ",nan"
    arff.write_text("\n".join(lines) + "\n")
    for dim in DIMS:
        _keep_rows(root / "ratings_gold_standard" / dim / "dev_1.arff", 60)
        _keep_rows(root / "ratings_gold_standard" / dim / "dev_2.arff", 147)
    cache = tmp_path_factory.mktemp("bad_cache")
    command = [
        sys.executable, "-m", "pkd_jax.preprocess", "--dataset=synthetic", f"--src={root}", f"--out={cache}",
        "--workers=2", f"--face_size={tiny_config.face_size}", "--noprogress",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    return root, cache, result


def test_cli_exits_non_zero_and_names_the_broken_files(bad_run):
    _, _, result = bad_run
    assert result.returncode == 1, result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"ok\s+2\b", out) and re.search(r"failed\s+4\b", out), out
    for name in ("train_1.mp4", "train_2.wav", "train_3.arff", "dev_1.arff"):
        assert name in out, out


def test_each_failure_is_recorded_with_its_reason(bad_run):
    root, cache, _ = bad_run
    videos = json.loads((cache / "manifest.json").read_text())["videos"]
    assert {v: m["status"] for v, m in videos.items()} == {
        "train_1": "failed", "train_2": "failed", "train_3": "failed", "train_4": "ok",
        "dev_1": "failed", "dev_2": "ok",
    }  # fmt: skip
    reasons = {v: m["reason"] for v, m in videos.items()}
    assert str(root / "recordings_video" / "train_1.mp4") in reasons["train_1"]
    assert str(root / "recordings_audio" / "train_2.wav") in reasons["train_2"]
    assert "missing" in reasons["train_2"]
    assert str(root / "ratings_gold_standard" / "valence" / "train_3.arff") in reasons["train_3"]
    assert "nan" in reasons["train_3"].lower()
    assert "dev_1.arff" in reasons["dev_1"] and "60" in reasons["dev_1"] and "150" in reasons["dev_1"]
    for video_id in ("train_1", "train_2", "train_3", "dev_1"):
        assert not (cache / "videos" / video_id).exists()


def test_small_length_mismatch_truncates_with_a_warning(bad_run, tiny_cache):
    _, cache, result = bad_run
    meta = json.loads((cache / "manifest.json").read_text())["videos"]["dev_2"]
    assert meta["num_frames"] == 147
    (warning,) = meta["warnings"]
    assert "dev_2.arff" in warning and "147" in warning and "150" in warning
    assert "truncated to 147" in result.stdout
    labels = np.load(cache / "videos" / "dev_2" / "labels.npy")
    np.testing.assert_array_equal(labels, np.load(tiny_cache[0] / "videos" / "dev_1" / "labels.npy")[:147])
    assert np.load(cache / "videos" / "dev_2" / "logmel.npy").shape[0] == 4 * 147
    assert np.load(cache / "videos" / "dev_2" / "frames.npy").shape[0] == 147


def test_rerun_retries_only_the_failures(bad_run, tiny_config, capsys):
    from pkd_jax.data.corpus_to_cache import preprocess_corpus

    root, cache, _ = bad_run
    (root / "recordings_audio" / "train_4.wav").rename(root / "recordings_audio" / "train_2.wav")
    shutil.copy2(root / "recordings_audio" / "train_2.wav", root / "recordings_audio" / "train_4.wav")
    manifest = preprocess_corpus("synthetic", root, cache, tiny_config, progress=False)
    assert "1 processed now, 2 skipped" in capsys.readouterr().out
    assert manifest["videos"]["train_2"]["status"] == "ok"
    assert sorted(v for v, m in manifest["videos"].items() if m["status"] != "ok") == [
        "dev_1",
        "train_1",
        "train_3",
    ]


def test_cli_meets_a_wrong_face_setting_with_one_line(tmp_path):
    command = [
        sys.executable, "-m", "pkd_jax.preprocess", "--dataset=synthetic", f"--src={tmp_path}",
        f"--out={tmp_path / 'cache'}", "--detector=mtcnn", "--noprogress",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: detector='mtcnn' needs detector_weights") and "weights import" in last
    assert not (tmp_path / "cache").exists()
