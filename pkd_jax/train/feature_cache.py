"""The feature cache a run trains on: preprocessed from the corpus on first use, checked against the
config on every start (a cache of other face crops is an error, not a silent substitute)."""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
from absl import logging

from pkd_jax.config import build
from pkd_jax.data.cache import Cache, CacheError
from pkd_jax.data.preprocess_config import with_later_fields
from pkd_jax.train import sharding


def open_feature_cache(config: ml_collections.ConfigDict) -> Cache:
    """The feature cache of the configured corpus, preprocessing the corpus first when it has none.

    Raises:
      CacheError: naming the manifest, when the cache was built with settings the config contradicts.
    """
    directory = build.cache_dir(config)
    if directory is None:
        raise ValueError("the config names no corpus: set config.data.root (or config.data.cache)")
    # Many processes share one cache directory: process 0 builds it while the others wait.
    if sharding.is_chief() and not (directory / "manifest.json").exists():
        from pkd_jax.data.corpus_to_cache import preprocess_corpus

        if not config.data.root or not Path(config.data.root).is_dir():
            raise FileNotFoundError(f"no feature cache at {directory} and no corpus at {config.data.root!r}")
        logging.info("No feature cache at %s: preprocessing %s first.", directory, config.data.root)
        preprocess_corpus(
            config.data.dataset,
            config.data.root,
            directory,
            config=build.preprocess_config(config),
            workers=config.data.preprocess_workers,
        )
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("pkd_jax feature cache")
        if not (directory / "manifest.json").exists():
            raise FileNotFoundError(
                f"process {jax.process_index()} sees no feature cache at {directory}: "
                "every process must see the cache (and the workdir) on a shared disk"
            )
    cache = Cache(directory)
    check_cache_settings(config, cache)
    return cache


# Config field -> the cache manifest's field.
_CHECKED_FIELDS = {"face_size": "face_size", "face_detector": "detector", "face_align": "face_align"}


def check_cache_settings(config: ml_collections.ConfigDict, cache: Cache) -> None:
    """The cache's preprocessing must be the one the config asks for (the fields a config sets)."""
    # A config sets the face size, detector and alignment; the other settings (detection width, margin,
    # weights path) come from whoever preprocessed the corpus.
    stored = with_later_fields(cache.config)
    for name, field in _CHECKED_FIELDS.items():
        built, wanted = stored.get(field), config.data[name]
        if built != wanted:
            raise CacheError(
                f"{cache.root / 'manifest.json'}: the feature cache was built with {field}={built!r}, the "
                f"config asks data.{name}={wanted!r}. Point config.data.cache at a new directory to "
                f"preprocess the corpus for this config, or set data.{name}={built!r}"
            )
