"""`PreprocessConfig`: everything that determines a feature cache's content.

Stored as the cache manifest's `config`; the corpus readers (`recola`, `affwild2`), the preprocessing
orchestrator (`corpus_to_cache`) and inference (face settings) all read it, so it lives apart from them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from typing import Any

from pkd_jax.cached import canonical_json

FACE_ALIGNMENTS = ("none", "landmarks")  # PreprocessConfig.face_align values
PHYSIO_CHOICES = ("auto", "yes", "no")  # PreprocessConfig.physio values; a manifest holds "yes" or "no"
_DETECTOR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")


def check_detector_name(name: object) -> str:
    """Returns `name` when it is a plain face-detector name (letters, digits, `_`, `-`); else ValueError.

    Detectors are chosen by registered name only (`pkd_jax.data.faces.register_detector`): a name read from
    a cache manifest or a config must never make pkd_jax import code, so import paths are refused here.
    """
    if isinstance(name, str) and ":" in name:
        raise ValueError(
            f"face detector {name!r} looks like an import path ('module:factory'); detectors are chosen "
            "by registered name only. For a detector of your own, pass --detector_module=MODULE (a module "
            "that registers it with pkd_jax.data.faces.register_detector) and --detector=<its name>"
        )
    if not isinstance(name, str) or not _DETECTOR_NAME.fullmatch(name):
        raise ValueError(f"face detector name {name!r}: use letters, digits, '_' and '-' only")
    return name


def _field(default: Any, text: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": text})


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """Everything that determines the cache's content; stored as the manifest's `config`."""

    fps: int = _field(25, "Frame rate of the cache (videos and Aff-Wild2 rows are resampled to it).")
    face_size: int = _field(112, "Side of the square face crops in pixels.")
    detector: str = _field(
        "haar",
        "Face detector, by registered name: 'haar' (OpenCV, no landmarks) or 'mtcnn' (the paper's, in JAX, "
        "with landmarks; needs detector_weights); a detector of your own is registered by a plugin module "
        "named with --detector_module.",
    )
    detector_weights: str = _field(
        "",
        "Weights file of the face detector: for 'mtcnn' the .npz of `python -m pkd_jax.weights import "
        "--arch=mtcnn`; empty for 'haar'.",
    )
    face_align: str = _field(
        "none",
        "How a detected face becomes a crop: 'none' (the square around its box, with face_margin) or "
        "'landmarks' (five landmarks warped onto the 112 x 112 template; needs a detector with landmarks).",
    )
    face_margin: float = _field(
        0.2, "Context around the detected face box, as a fraction of its size per side."
    )
    detect_width: int = _field(320, "Frames wider than this are downscaled for face detection.")
    min_face_fraction: float = _field(
        0.15, "Smallest face detected, as a fraction of the frame's shorter side."
    )
    redetect_every: int = _field(
        10,
        "Full-frame face detection every this many frames; the face is tracked in between (1: always full).",
    )
    sample_rate: int = _field(16000, "Audio sampling rate in Hz.")
    n_fft: int = _field(512, "STFT window length in samples (32 ms at 16 kHz).")
    hop: int = _field(160, "STFT hop in samples (10 ms at 16 kHz).")
    n_mels: int = _field(64, "Mel bands.")
    fmin: float = _field(0.0, "Lowest mel band edge in Hz.")
    fmax: float = _field(8000.0, "Highest mel band edge in Hz (at most sample_rate / 2).")
    log_floor: float = _field(1e-6, "Added to the mel power before the log.")
    length_tolerance_fraction: float = _field(
        0.02, "Stream lengths of a video may differ by this fraction of the longest (or the frames below)."
    )
    length_tolerance_frames: int = _field(25, "Stream lengths of a video may differ by this many frames.")
    physio: str = _field(
        "auto",
        "Physiological features (ECG heart rate and HRV, EDA tonic and phasic) from recordings_physio/<id>.csv: "
        "'auto' (when the corpus has that folder), 'yes' (required) or 'no'. The cache manifest records the "
        "resolved 'yes' or 'no'.",
    )
    physio_sample_rate: float = _field(
        250.0, "Sampling rate in Hz the physiological recordings must have (within 1%)."
    )
    physio_max_gap_s: float = _field(
        1.0, "Longest run of missing (NaN) physiological samples that is interpolated, in seconds."
    )

    def __post_init__(self) -> None:
        check_detector_name(self.detector)
        if self.face_align not in FACE_ALIGNMENTS:
            raise ValueError(f"face_align={self.face_align!r}; choose one of {list(FACE_ALIGNMENTS)}")
        if self.face_align == "landmarks" and self.detector == "haar":
            raise ValueError(
                "face_align='landmarks' needs landmarks, which the 'haar' detector does not give; use "
                "detector='mtcnn' or face_align='none'"
            )
        if self.detector == "mtcnn" and not self.detector_weights:
            raise ValueError(
                "detector='mtcnn' needs detector_weights: the .npz of `python -m pkd_jax.weights import "
                "--arch=mtcnn --src=<facenet-pytorch wheel> --out=mtcnn.npz` (docs/data.md, MTCNN)"
            )
        if self.sample_rate % self.fps or (self.sample_rate // self.fps) % self.hop:
            raise ValueError(
                f"sample_rate={self.sample_rate} must be a multiple of fps * hop = {self.fps * self.hop} so "
                "that each video frame owns a whole number of mel frames"
            )
        if min(self.face_size, self.detect_width, self.redetect_every) < 1 or self.face_margin < 0:
            raise ValueError("face_size, detect_width and redetect_every must be positive, face_margin >= 0")
        if not 0 < self.min_face_fraction <= 1:
            raise ValueError(f"min_face_fraction={self.min_face_fraction} must be in (0, 1]")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(
                f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={self.fmin}, fmax={self.fmax}"
            )
        if self.n_fft < self.hop:
            raise ValueError(f"n_fft={self.n_fft} must be at least hop={self.hop}")
        if self.length_tolerance_fraction < 0 or self.length_tolerance_frames < 0:
            raise ValueError("length tolerances must be non-negative")
        if self.physio not in PHYSIO_CHOICES:
            raise ValueError(f"physio={self.physio!r}; choose one of {list(PHYSIO_CHOICES)}")
        if not self.physio_sample_rate >= 100:
            raise ValueError(
                f"physio_sample_rate={self.physio_sample_rate} must be at least 100 Hz (ECG R-peak detection)"
            )
        if not self.physio_max_gap_s >= 0:
            raise ValueError(f"physio_max_gap_s={self.physio_max_gap_s} must be non-negative")

    @property
    def samples_per_frame(self) -> int:
        return self.sample_rate // self.fps

    @property
    def mel_per_frame(self) -> int:
        return self.samples_per_frame // self.hop

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def detector_options(self) -> dict[str, Any]:
        """Keyword arguments for `faces.create_detector`."""
        return {
            "detect_width": self.detect_width,
            "min_face_fraction": self.min_face_fraction,
            "redetect_every": self.redetect_every,
            "weights": self.detector_weights,
        }

    def digest(self) -> str:
        """Short hash identifying this configuration in every video's meta.json.

        Its form is fixed (sha1 of the canonical JSON, 12 hex digits): every cached video records it and
        resuming preprocessing compares it, so another hash would refuse every existing cache.
        """
        return hashlib.sha1(canonical_json(self.to_dict())).hexdigest()[:12]


# Added after the first caches were written.
LATER_FIELDS = ("detector_weights", "face_align", "physio", "physio_sample_rate", "physio_max_gap_s")
# What a cache written before a later field did, where that is not the field's default.
_BEFORE_THE_FIELD = {"physio": "no"}


def with_later_fields(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A manifest's stored `config` with the fields added since filled in with what a cache written before
    them did: their defaults (no detector weights, square crops), except `physio`, which is "no"."""
    defaults = PreprocessConfig()
    filled = {name: _BEFORE_THE_FIELD.get(name, getattr(defaults, name)) for name in LATER_FIELDS}
    return {**filled, **stored}
