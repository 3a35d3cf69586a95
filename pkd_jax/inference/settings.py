"""The preprocessing settings a trained model expects, and the face cropper built from them.

Inference detects and crops faces with the same code and settings as preprocessing: the training cache
manifest's `config` (a `PreprocessConfig`), checked against the model's face size. The manifest names its
detector, which must be registered (`pkd_jax.data.faces`): a manifest, which a shared workdir may ship,
never makes pkd_jax import code; a detector of the user's own comes from `--detector_module`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import ml_collections

from pkd_jax.config import build
from pkd_jax.data.cache import Cache, CacheError
from pkd_jax.data.faces import FaceCropper, create_detector, is_registered, not_registered_message
from pkd_jax.data.preprocess_config import with_later_fields

_LOG = logging.getLogger(__name__)

# Face-detection fields of the cache manifest's preprocessing config (`PreprocessConfig`).
FACE_FIELDS = (
    "fps",
    "face_size",
    "detector",
    "face_margin",
    "detect_width",
    "min_face_fraction",
    "redetect_every",
)


def preprocess_settings(
    config: ml_collections.ConfigDict, cache_dir: str | Path | None = None, *, need_detector: bool = True
) -> tuple[dict[str, Any], Cache | None]:
    """The preprocessing configuration the model was trained on, and the training cache it comes from.

    The settings are the training cache manifest's `config` (`cache_dir`, else the cache config.json
    names). Without that cache (a model copied elsewhere), preprocessing's defaults with the config's
    face size are used, with a warning, and the cache is None.

    `need_detector` (for inference, which creates the detector) also requires the manifest's detector to
    be registered; export, which only records its name, passes False.

    Raises:
      CacheError: naming the manifest, when `cache_dir` has none, its settings do not fit the model, or
        (`need_detector`) its detector is not registered.
    """
    directory = Path(cache_dir) if cache_dir else build.cache_dir(config)
    if directory is not None and (cache_dir or (directory / "manifest.json").is_file()):
        cache = Cache(directory)  # validates the manifest, naming it
        settings = with_later_fields(cache.config)
        manifest = directory / "manifest.json"
        missing = [f for f in FACE_FIELDS if f not in settings]
        if missing:
            raise CacheError(f"{manifest}: its preprocessing config lacks {missing}")
        if settings["face_size"] != config.data.face_size:
            raise CacheError(
                f"{manifest}: faces of {settings['face_size']} px, the model takes {config.data.face_size} px"
            )
        if need_detector and not is_registered(settings["detector"]):
            raise CacheError(
                f"{manifest}: the training cache's {not_registered_message(settings['detector'])}"
            )
        return settings, cache
    _LOG.warning(
        "No training cache (%s): detecting faces with preprocessing's default settings (face size %d); "
        "pass --cache=DIR to use the training cache's exact settings.",
        f"no manifest.json in {directory}" if directory else "the config names none",
        config.data.face_size,
    )
    return build.preprocess_config(config).to_dict(), None


def make_cropper(settings: dict[str, Any], detector_weights: str | Path | None = None) -> FaceCropper:
    """The face cropper preprocessing builds from the same settings (a registered detector only).

    `detector_weights` replaces the weights file the settings name (a model used on another machine).
    """
    settings = with_later_fields(settings)  # also a manifest's config given directly
    detector = create_detector(
        settings["detector"],
        detect_width=settings["detect_width"],
        min_face_fraction=settings["min_face_fraction"],
        redetect_every=settings["redetect_every"],
        weights=str(detector_weights or settings["detector_weights"]),
    )
    return FaceCropper(detector, settings["face_size"], settings["face_margin"], settings["face_align"])
