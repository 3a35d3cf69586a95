"""The held-out test split: generated with ratings, read into the cache as "test"; unlabelled ones skipped."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from pkd_jax.data import recola, synthetic
from pkd_jax.data.cache import Cache
from pkd_jax.data.corpus_to_cache import preprocess_corpus

SECONDS = 2.0
SMALL = synthetic.SyntheticConfig(frame_width=128, frame_height=128)


@pytest.fixture(scope="module")
def test_split_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 train + 1 labelled test recording, plus `test_2`: a video and audio without any rating file."""
    out = tmp_path_factory.mktemp("test_split_corpus")
    ids = synthetic.generate_corpus(out, 1, 0, SECONDS, 0, config=SMALL, progress=False, n_test=1)
    assert ids == ["train_1", "test_1"]
    # Like RECOLA's test set: recordings whose labels are withheld.
    for sub, suffix in (("recordings_video", ".mp4"), ("recordings_audio", ".wav")):
        shutil.copy2(out / sub / f"test_1{suffix}", out / sub / f"test_2{suffix}")
    return out


def test_generator_writes_labelled_test_recordings(test_split_corpus: Path) -> None:
    meta = json.loads((test_split_corpus / "synthetic.json").read_text())
    assert (meta["n_train"], meta["n_dev"], meta["n_test"]) == (1, 0, 1)
    for dim in ("arousal", "valence"):
        assert (test_split_corpus / f"ratings_gold_standard/{dim}/test_1.arff").is_file()
    # The same generative model, seeded by (seed, id) only: test_1 does not depend on the other counts.
    alone = test_split_corpus.parent / "test_only"
    synthetic.generate_corpus(alone, 0, 0, SECONDS, 0, config=SMALL, progress=False, n_test=1)
    for name in ("latent/test_1.csv", "ratings_gold_standard/valence/test_1.arff"):
        assert (alone / name).read_bytes() == (test_split_corpus / name).read_bytes()


def test_discover_keeps_labelled_test_recordings_and_skips_the_rest(test_split_corpus: Path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger=recola.__name__):
        jobs = recola.discover(test_split_corpus)
    assert [(j.video_id, j.split) for j in jobs] == [("train_1", "train"), ("test_1", "test")]
    assert "skipping 1 test recordings without gold standard" in caplog.text and "test_2" in caplog.text


def test_preprocessing_gives_a_test_split(test_split_corpus: Path, tiny_config, tmp_path: Path) -> None:
    manifest = preprocess_corpus(
        "synthetic", test_split_corpus, tmp_path, tiny_config, workers=1, progress=False, verbose=False
    )
    assert {v: (m["split"], m["status"]) for v, m in manifest["videos"].items()} == {
        "train_1": ("train", "ok"),
        "test_1": ("test", "ok"),
    }  # test_2 is skipped, not recorded as a failure
    cache = Cache(tmp_path)
    assert cache.ids("test") == ["test_1"] and cache.failures() == {}
    assert cache.video("test_1").labels.shape == (round(SECONDS * 25), 2)
    # Audio statistics come from the training split only.
    train = np.load(tmp_path / "videos/train_1/logmel.npy").astype(np.float64)
    np.testing.assert_allclose(cache.audio_stats()[0], train.mean(0), rtol=1e-4, atol=1e-4)
