"""Shared data fixtures: one tiny synthetic corpus and its feature cache, built once per test session.

Tests that modify a corpus or cache copy it first (`copy_corpus`); the session fixtures stay pristine.
Everything is exposed as fixtures (test modules cannot import a `conftest` reliably).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pkd_jax.data import synthetic
from pkd_jax.data.corpus_to_cache import preprocess_corpus
from pkd_jax.data.preprocess_config import PreprocessConfig

TINY_IDS = ("train_1", "train_2", "dev_1")
TINY_SECONDS = 6.0
TINY_FRAMES = round(TINY_SECONDS * 25)
# Small frames and crops keep the suite fast; many face-absent frames make the detection check meaningful.
# No physiological signals: tests/data/test_physio.py adds them to a copy of the corpus.
TINY_SYNTHETIC = synthetic.SyntheticConfig(
    frame_width=128, frame_height=128, face_absent_fraction=0.2, physio=False
)
TINY_PREPROCESS = PreprocessConfig(face_size=48, physio="no")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 train + 1 dev synthetic RECOLA-layout corpus of 6 s recordings, 128x128 pixels."""
    out = tmp_path_factory.mktemp("tiny_corpus")
    ids = synthetic.generate_corpus(out, 2, 1, TINY_SECONDS, 0, config=TINY_SYNTHETIC, progress=False)
    assert tuple(ids) == TINY_IDS
    return out


@pytest.fixture(scope="session")
def tiny_cache(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """(cache directory, manifest) of `tiny_corpus` preprocessed with `TINY_PREPROCESS`."""
    out = tmp_path_factory.mktemp("tiny_cache")
    manifest = preprocess_corpus(
        "synthetic", tiny_corpus, out, TINY_PREPROCESS, workers=1, progress=False, verbose=False
    )
    return out, manifest


@pytest.fixture(scope="session")
def tiny_config() -> PreprocessConfig:
    """The preprocessing configuration of `tiny_cache`."""
    return TINY_PREPROCESS


@pytest.fixture(scope="session")
def tiny_frames() -> int:
    """Frames per recording of `tiny_corpus`."""
    return TINY_FRAMES


def _copy_corpus(src: Path, dst: Path, ids: tuple[str, ...] | None = None) -> Path:
    """Copies the recordings `ids` (all when None) of a RECOLA-layout corpus to `dst`."""
    for path in src.rglob("*"):
        if path.is_file() and (ids is None or path.stem in ids):
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return dst


@pytest.fixture(scope="session")
def copy_corpus() -> Callable[..., Path]:
    """`copy_corpus(src, dst, ids=None)`: copies recordings of a RECOLA-layout corpus."""
    return _copy_corpus
