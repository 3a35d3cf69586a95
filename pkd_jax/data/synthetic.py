"""Synthetic audio-visual emotion corpus written in the exact RECOLA (AVEC 2016) layout.

Each recording is generated from two latent emotion trajectories, valence ``v(t)`` and arousal
``a(t)`` in [-1, 1] at 25 fps, and rendered into a face video, a speech-like waveform and lagged,
noisy gold-standard ratings. All knobs live in :class:`SyntheticConfig`.

Generative model:

* **Emotion.** Each dimension is ``tanh(offset + scale * x(t) + events(t))``: ``x`` is a
  unit-variance critically damped Ornstein-Uhlenbeck process (two cascaded AR(1) filters with
  time constant ``emotion_tau_s``, hence smooth), ``offset`` a per-video mean, and ``events``
  occasional slow Hann-shaped excursions (Poisson, ``events_per_minute``). Valence and arousal
  innovations and event amplitudes are correlated (``va_correlation``). With ``ratings_from``, the
  trajectories are instead read from real RECOLA rating files and used as the latent as-is.
* **Annotation.** Gold standard ``g(t) = clip(latent(t - annotator_lag_s) + n(t), -1, 1)``, with
  ``n`` smooth OU noise of std ``annotator_noise_sd``; the first ``lag`` frames repeat
  ``latent(0)``.
* **Video.** ``skimage.data.astronaut()`` matted onto a per-video background (gradient, blobs or
  stripes) and varied per identity by hue, saturation, gamma, scale, position and horizontal
  flip. Per frame: expression warps (``cv2.remap`` with Gaussian-bump displacement fields around
  hand-placed landmarks) raise the mouth corners and cheeks with positive valence, lower the
  corners and knit the brows with negative valence (strong), open the eyes and raise the brows
  with arousal (weak), and open the jaw with the speech envelope; then head motion (translation,
  rotation, scale) whose amplitude grows with arousal, lighting drift and sensor noise. During
  spans covering ``face_absent_fraction`` of the frames the face is covered by a solid occluder
  or the person leaves the frame (``face_visible = 0``).
* **Audio.** Source-filter speech at 16 kHz: a Rosenberg glottal pulse train with shimmer and
  aspiration noise; F0 per speaker (``f0_range_hz``) raised by arousal with arousal-scaled
  intonation variability; syllables (rate rising with arousal) grouped into phrases separated by
  pauses (shorter at high arousal); per-syllable vowel formant filters (a five-vowel filter bank)
  and consonant noise bursts; loudness rising with arousal; brightness (pre-emphasis mix)
  weakly rising with valence and arousal; coloured background noise at a per-video SNR. Audio
  therefore carries arousal far better than the face does (the privileged modality).

Randomness is derived from ``(seed, video_id)`` via ``numpy.random.SeedSequence``, so a recording
does not depend on which other recordings are generated or on the number of workers.

Splits: ``train_k`` and ``dev_k`` recordings, and optionally ``test_k`` ones (``n_test``, CLI ``--test``):
a held-out test split with gold-standard ratings from the same generative model, for scoring models
that were selected or compared on dev. (Real RECOLA's test recordings have no public ratings.)

CLI::

  python -m pkd_jax.data.synthetic --out=DIR --train=9 --dev=9 --test=3 --seconds=60 --seed=0
  python -m pkd_jax.data.synthetic --out=DIR --layout=affwild2 ...   # Aff-Wild2 layout instead

The Aff-Wild2 layout (``generate_affwild2_corpus``) writes ``cropped_aligned/<video>/%05d.jpg`` face crops
(none where the face is absent), ``VA_Estimation_Challenge/{Train_Set,Validation_Set}/<video>.txt``
labels with some ``-5`` (invalid) rows, and ``videos/<recording>.mp4`` carrying the audio; one training
recording holds two people, ``<recording>_left`` / ``<recording>_right``, sharing its audio track.
"""

from __future__ import annotations

import colorsys
import concurrent.futures
import dataclasses
import functools
import itertools
import json
import logging
import math
import multiprocessing
import re
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import scipy.signal
import soundfile
from skimage import data as skdata
from tqdm import tqdm

from pkd_jax.data import recola_format

_LOG = logging.getLogger(__name__)

DIMENSIONS = ("arousal", "valence")
LATENT_HEADER = "frame,time_s,valence,arousal,face_visible"

# Landmarks on skimage.data.astronaut() (x, y in the 512x512 image), placed by hand and checked
# against OpenCV's Haar cascades: face box (177, 66, 95, 95), eyes centred at (202, 101) and
# (246, 103).
_FACE_BOX = (177.0, 66.0, 95.0, 95.0)
_FACE_CENTER = (_FACE_BOX[0] + _FACE_BOX[2] / 2, _FACE_BOX[1] + _FACE_BOX[3] / 2)
_LANDMARKS = {
    "eye_l": (204.0, 101.0),
    "eye_r": (246.0, 102.0),
    "brow_l": (203.0, 89.0),
    "brow_r": (247.0, 90.0),
    "brow_inner_l": (215.0, 92.0),
    "brow_inner_r": (235.0, 92.0),
    "cheek_l": (198.0, 122.0),
    "cheek_r": (254.0, 122.0),
    "mouth_l": (203.0, 140.0),
    "mouth_r": (248.0, 138.0),
    "upper_lip": (226.0, 143.0),
    "lower_lip": (226.0, 154.0),
    "neck": (226.0, 190.0),
}

# Vowel formants (Hz) for /a e i o u/ (Peterson & Barney style averages) and bandwidths.
_VOWEL_FORMANTS = np.array(
    [(730, 1090, 2440), (530, 1840, 2480), (270, 2290, 3010), (570, 840, 2410), (300, 870, 2240)],
    dtype=np.float64,
)
_FORMANT_BANDWIDTHS = np.array([90.0, 110.0, 170.0])


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generative model (see the module docstring). Ranges are ``(low, high)``."""

    # Format.
    fps: int = 25
    sample_rate: int = 16000
    frame_width: int = 256
    frame_height: int = 256
    video_codec: str = "auto"  # "auto": libx264 when PyAV's ffmpeg has it, else mpeg4.
    video_crf: int = 20
    video_threads: int = 1  # Encoder threads; 1 keeps one video on one core.
    # Emotion.
    emotion_tau_s: float = 5.0
    valence_mean: float = 0.1
    arousal_mean: float = 0.0
    mean_sd: float = 0.2  # Per-video offset spread.
    valence_scale: float = 0.35
    arousal_scale: float = 0.45
    va_correlation: float = 0.3
    events_per_minute: float = 1.5
    event_duration_s: tuple[float, float] = (3.0, 10.0)
    event_amplitude: float = 0.6
    # Annotation.
    annotator_lag_s: float = 2.0
    annotator_noise_sd: float = 0.04
    annotator_noise_tau_s: float = 1.0
    # Appearance.
    face_width_frac: tuple[float, float] = (0.32, 0.42)  # Haar face-box width / frame width.
    face_center_jitter: float = 0.05
    hue_shift_deg: float = 12.0
    saturation_range: tuple[float, float] = (0.75, 1.25)
    gamma_range: tuple[float, float] = (0.8, 1.25)
    flip_prob: float = 0.5
    sensor_noise_sd: tuple[float, float] = (1.5, 4.0)  # In 8-bit levels.
    lighting_drift: float = 0.08
    # Expression warps, in face widths at |coefficient| = 1.
    mouth_valence_gain: float = 0.09
    brow_valence_gain: float = 0.03
    eye_arousal_gain: float = 0.015
    brow_arousal_gain: float = 0.02
    jaw_speech_gain: float = 0.03
    # Head motion.
    head_translation_sd: float = 0.01  # Frame fraction, at arousal -1.
    head_rotation_sd_deg: float = 1.2
    head_motion_arousal_gain: float = 0.5  # Amplitude x (1 + gain * (a + 1) / 2); weak on purpose.
    head_motion_tau_s: float = 0.3
    head_drift_sd: float = 0.015
    # Face absence.
    face_absent_fraction: float = 0.03
    face_absent_span_s: tuple[float, float] = (0.5, 2.0)
    occluder_prob: float = 0.7  # Otherwise the person leaves the frame.
    # Audio.
    f0_range_hz: tuple[float, float] = (95.0, 230.0)
    f0_arousal_semitones: float = 3.0
    f0_variability_semitones: tuple[float, float] = (0.7, 2.5)  # Accent sd at arousal -1 / +1.
    loudness_arousal_db: float = 12.0
    syllable_rate_hz: tuple[float, float] = (2.5, 6.0)
    phrase_s: tuple[float, float] = (1.5, 4.0)
    pause_mean_s: float = 0.45
    pause_arousal_gain: float = 0.8  # Pause length x (1 - gain * a).
    brightness: float = 0.6
    brightness_valence_gain: float = 0.25
    brightness_arousal_gain: float = 0.4
    snr_db: tuple[float, float] = (10.0, 25.0)

    def __post_init__(self) -> None:
        if self.frame_width % 2 or self.frame_height % 2:
            raise ValueError("frame_width and frame_height must be even (yuv420p)")
        if min(self.frame_width, self.frame_height) < 32:
            raise ValueError("frames must be at least 32x32")
        if self.sample_rate % self.fps:
            raise ValueError("sample_rate must be a multiple of fps")
        if not 0.0 <= self.face_absent_fraction < 1.0:
            raise ValueError("face_absent_fraction must be in [0, 1)")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SyntheticConfig:
        """Rebuilds a config from ``dataclasses.asdict`` output, e.g. ``synthetic.json["config"]``."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    @property
    def samples_per_frame(self) -> int:
        """Audio samples per video frame."""
        return self.sample_rate // self.fps


@dataclasses.dataclass(frozen=True)
class Appearance:
    """Per-video visual identity."""

    face_width_px: float
    face_center: tuple[float, float]
    flip: bool
    hue_shift_deg: float
    saturation: float
    gamma: float
    background: str
    background_colors: tuple[tuple[float, float, float], tuple[float, float, float]]
    sensor_noise_sd: float


@dataclasses.dataclass(frozen=True)
class Voice:
    """Per-video vocal identity and recording conditions."""

    f0_hz: float
    formant_scale: float
    snr_db: float
    noise_color: float  # AR(1) coefficient of the background noise (0 white, ->1 brown).


@dataclasses.dataclass(frozen=True)
class AbsentSpan:
    """A run of frames ``[start, stop)`` without a detectable face."""

    start: int
    stop: int
    mode: str  # "occluder" or "out_of_frame".
    color: tuple[float, float, float]


# ----------------------------------------------------------------------------------------------
# Random signals.


def video_rngs(seed: int, video_id: str) -> dict[str, np.random.Generator]:
    """Independent generators per component, derived from ``(seed, video_id)`` only."""
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    root = np.random.SeedSequence([seed, *video_id.encode("utf-8")])
    names = ("emotion", "annotation", "appearance", "voice", "visibility", "motion", "audio")
    return {n: np.random.default_rng(s) for n, s in zip(names, root.spawn(len(names)), strict=True)}


def smooth_noise(
    rng: np.random.Generator, n: int, tau: float, dims: int = 1, eps: np.ndarray | None = None
) -> np.ndarray:
    """Stationary, unit-variance, critically damped OU noise (two cascaded AR(1) filters).

    Args:
      rng: Random generator (unused if ``eps`` is given).
      n: Output length in samples.
      tau: Time constant in samples.
      dims: Number of independent channels.
      eps: Optional innovations of shape ``[dims, n + burn-in]`` (to correlate channels).

    Returns:
      Array of shape ``[dims, n]``.
    """
    phi = math.exp(-1.0 / max(tau, 1e-3))
    burn = burn_in(tau)
    if eps is None:
        eps = rng.standard_normal((dims, n + burn))
    x = scipy.signal.lfilter([1.0], [1.0, -2.0 * phi, phi * phi], eps, axis=-1)[:, burn:]
    # Sum of squared impulse response of 1 / (1 - phi z^-1)^2 is (1 + phi^2) / (1 - phi^2)^3.
    x /= math.sqrt((1.0 + phi * phi) / (1.0 - phi * phi) ** 3)
    return x


def burn_in(tau: float) -> int:
    """Burn-in length used by :func:`smooth_noise` for time constant ``tau``."""
    return math.ceil(6 * tau) + 1  # Long enough for the first sample to be stationary.


def _correlated_normals(rng: np.random.Generator, shape: tuple[int, ...], rho: float) -> np.ndarray:
    """Two standard-normal channels (leading axis) with correlation ``rho``."""
    z = rng.standard_normal((2, *shape))
    z[1] = rho * z[0] + math.sqrt(1.0 - rho * rho) * z[1]
    return z


def sample_emotion(
    rng: np.random.Generator, n_frames: int, config: SyntheticConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Samples latent ``(valence, arousal)`` trajectories of ``n_frames`` frames in [-1, 1]."""
    fps, rho = config.fps, config.va_correlation
    tau = config.emotion_tau_s * fps
    x = smooth_noise(rng, n_frames, tau, eps=_correlated_normals(rng, (n_frames + burn_in(tau),), rho))
    means = np.array([config.valence_mean, config.arousal_mean])
    offsets = means + config.mean_sd * _correlated_normals(rng, (), rho)
    scales = np.array([config.valence_scale, config.arousal_scale])
    z = offsets[:, None] + scales[:, None] * x
    t = np.arange(n_frames)
    for _ in range(rng.poisson(config.events_per_minute * n_frames / fps / 60.0)):
        centre = rng.uniform(0, n_frames)
        half = 0.5 * rng.uniform(*config.event_duration_s) * fps
        amp = config.event_amplitude * _correlated_normals(rng, (), rho)
        inside = np.abs(t - centre) < half
        window = 0.5 * (1.0 + np.cos(np.pi * (t[inside] - centre) / half))
        z[:, inside] += amp[:, None] * window
    valence, arousal = np.tanh(z)
    return valence, arousal


def annotate(latent: np.ndarray, rng: np.random.Generator, config: SyntheticConfig) -> np.ndarray:
    """Gold standard from a latent trajectory: annotator lag, smooth noise, clipping."""
    n = len(latent)
    lag = min(round(config.annotator_lag_s * config.fps), n)
    shifted = np.concatenate([np.full(lag, latent[0]), latent[: n - lag]])
    noise = smooth_noise(rng, n, config.annotator_noise_tau_s * config.fps)[0]
    return np.clip(shifted + config.annotator_noise_sd * noise, -1.0, 1.0)


def sample_absent_spans(rng: np.random.Generator, n_frames: int, config: SyntheticConfig) -> list[AbsentSpan]:
    """Places non-overlapping face-absent spans covering ``face_absent_fraction`` of the frames."""
    target = round(config.face_absent_fraction * n_frames)
    lengths: list[int] = []
    while sum(lengths) < target:
        length = max(1, round(rng.uniform(*config.face_absent_span_s) * config.fps))
        lengths.append(min(length, target - sum(lengths)))
    if not lengths:
        return []
    free = n_frames - target
    if free < len(lengths) - 1:  # Too short for separate spans: merge them.
        lengths = [target]
    # Distribute the free frames over the gaps, keeping at least one frame between spans.
    gaps = rng.multinomial(free - (len(lengths) - 1), np.full(len(lengths) + 1, 1 / (len(lengths) + 1)))
    gaps[1:-1] += 1
    spans, start = [], 0
    for gap, length in zip(gaps, lengths, strict=False):
        start += gap
        mode = "occluder" if rng.random() < config.occluder_prob else "out_of_frame"
        color = tuple(float(c) for c in rng.uniform(20, 235, size=3))
        spans.append(AbsentSpan(int(start), int(start + length), mode, color))
        start += length
    return spans


# ----------------------------------------------------------------------------------------------
# Appearance.


def sample_appearance(rng: np.random.Generator, config: SyntheticConfig) -> Appearance:
    """Samples a visual identity: colour, scale, placement, flip and background."""
    w, h, j = config.frame_width, config.frame_height, config.face_center_jitter
    colors = []
    for _ in range(2):
        rgb = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.05, 0.5), rng.uniform(0.3, 0.9))
        colors.append(tuple(255.0 * c for c in rgb))
    return Appearance(
        face_width_px=float(rng.uniform(*config.face_width_frac) * w),
        face_center=(float(w * (0.5 + rng.uniform(-j, j))), float(h * (0.42 + rng.uniform(-j, j)))),
        flip=bool(rng.random() < config.flip_prob),
        hue_shift_deg=float(rng.uniform(-1, 1) * config.hue_shift_deg),
        saturation=float(rng.uniform(*config.saturation_range)),
        gamma=float(rng.uniform(*config.gamma_range)),
        background=str(rng.choice(["gradient", "blobs", "stripes"])),
        background_colors=(colors[0], colors[1]),
        sensor_noise_sd=float(rng.uniform(*config.sensor_noise_sd)),
    )


@functools.cache
def astronaut_rgba() -> np.ndarray:
    """The astronaut photo with a hand-built person matte as alpha, ``[512, 512, 4]`` uint8."""
    rgb = skdata.astronaut()
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    mask = np.zeros(rgb.shape[:2], np.uint8)
    cv2.ellipse(mask, (226, 98), (80, 92), 0, 0, 360, 255, -1)  # Head and hair.
    body = [(175, 168), (272, 168), (300, 158), (320, 175), (335, 205), (350, 250), (362, 300),
            (365, 345), (460, 400), (511, 430), (511, 511), (60, 511), (62, 300), (68, 230),
            (90, 200), (118, 175), (140, 158)]  # fmt: skip
    cv2.fillPoly(mask, [np.array(body, np.int32)], 255)
    # The studio backdrop is bright and unsaturated; carve it out around the hair and shoulders
    # but not from the face or the (also whitish) helmet ring.
    keep = np.zeros_like(mask)
    cv2.ellipse(keep, (226, 118), (42, 60), 0, 0, 360, 255, -1)
    cv2.ellipse(keep, (212, 212), (92, 62), 0, 0, 360, 255, -1)
    backdrop = (hsv[..., 1] < 45) & (hsv[..., 2] > 150) & (keep == 0)
    backdrop[300:] = False
    mask[backdrop] = 0
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    mask = cv2.morphologyEx(cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel), cv2.MORPH_CLOSE, kernel)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    mask = np.where(labels == largest, 255, 0).astype(np.uint8)
    alpha = cv2.GaussianBlur(mask, (0, 0), 2.0)
    return np.dstack([rgb, alpha])


def _recolor(rgb: np.ndarray, appearance: Appearance) -> np.ndarray:
    """Applies hue shift, saturation scale and gamma to a uint8 RGB image."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.int32)
    hsv[..., 0] = (hsv[..., 0] + round(appearance.hue_shift_deg / 2)) % 180  # OpenCV hue: 0-179.
    hsv[..., 1] = np.clip(hsv[..., 1] * appearance.saturation, 0, 255)
    out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** appearance.gamma, 0, 255).astype(np.uint8)
    return cv2.LUT(out, lut)


def _background(rng: np.random.Generator, appearance: Appearance, h: int, w: int) -> np.ndarray:
    """A smooth per-video background, ``[h, w, 3]`` float32."""
    c0, c1 = (np.array(c, np.float32) for c in appearance.background_colors)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if appearance.background == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        proj = xx * math.cos(angle) + yy * math.sin(angle)
        mix = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
    elif appearance.background == "blobs":
        coarse = rng.random((rng.integers(3, 7), rng.integers(3, 7))).astype(np.float32)
        mix = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    else:
        period = rng.uniform(0.15, 0.4) * w
        mix = 0.5 + 0.5 * np.sin(2 * np.pi * xx / period + rng.uniform(0, 2 * np.pi))
    mix = np.clip(mix, 0, 1)[..., None]
    img = c0 * (1 - mix) + c1 * mix
    grain = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 1.5)
    return img + 6.0 * grain[..., None]


def _bump(gx: np.ndarray, gy: np.ndarray, centre: np.ndarray, sigma: float) -> np.ndarray:
    """Isotropic Gaussian bump with unit peak."""
    return np.exp(-((gx - centre[0]) ** 2 + (gy - centre[1]) ** 2) / (2 * sigma * sigma))


class _FaceRenderer:
    """Renders frames of one identity: expression warp, head motion, compositing, noise."""

    n_fields = 4  # Coefficients: positive valence, negative valence, arousal, jaw opening.

    def __init__(self, appearance: Appearance, config: SyntheticConfig, rng: np.random.Generator):
        self.cfg = config
        w, h = config.frame_width, config.frame_height
        # The person canvas has a margin so head motion never reveals a cut edge of the photo.
        self.margin = m = int(0.25 * max(w, h))
        scale = appearance.face_width_px / _FACE_BOX[2]
        self.face_width = appearance.face_width_px
        src = astronaut_rgba().copy()
        src[..., :3] = _recolor(src[..., :3], appearance)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        src = cv2.resize(src, None, fx=scale, fy=scale, interpolation=interp)
        cx, cy = appearance.face_center
        if appearance.flip:
            src = np.ascontiguousarray(src[:, ::-1])
            face_x = src.shape[1] - 1 - _FACE_CENTER[0] * scale
        else:
            face_x = _FACE_CENTER[0] * scale
        shift = np.array([cx + m - face_x, cy + m - _FACE_CENTER[1] * scale])
        place = np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]])
        self.canvas = cv2.warpAffine(src, place, (w + 2 * m, h + 2 * m), flags=cv2.INTER_LINEAR)
        self.work = self.canvas.copy()

        def to_canvas(p: tuple[float, float]) -> np.ndarray:
            x = src.shape[1] - 1 - p[0] * scale if appearance.flip else p[0] * scale
            return np.array([x, p[1] * scale]) + shift

        self.landmarks = {k: to_canvas(p) for k, p in _LANDMARKS.items()}
        self.face_centre = to_canvas(_FACE_CENTER)
        self._build_fields()
        self.background = _background(rng, appearance, h, w)
        self.ramp = np.linspace(-1, 1, w, dtype=np.float32)[None, :, None]
        sd = appearance.sensor_noise_sd
        self.noise_bank = (sd * rng.standard_normal((8, h, w, 3))).astype(np.float32)

    def _build_fields(self) -> None:
        """Precomputes per-coefficient displacement fields over the face region of interest."""
        fw, lm, cfg = self.face_width, self.landmarks, self.cfg
        pts = np.array(list(lm.values()))
        lo = np.floor(pts.min(0) - 0.45 * fw).astype(int).clip(0)
        hi = np.ceil(pts.max(0) + 0.45 * fw).astype(int)
        hi = np.minimum(hi, [self.canvas.shape[1], self.canvas.shape[0]])
        self.roi = (slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        gy, gx = np.mgrid[lo[1] : hi[1], lo[0] : hi[0]].astype(np.float32)
        self.grid = (gx, gy)
        mid_x = self.face_centre[0]
        fields = np.zeros((self.n_fields, *gx.shape, 2), np.float32)

        def add(k: int, centre: np.ndarray, sigma: float, motion: tuple[float, float]) -> None:
            fields[k] += _bump(gx, gy, centre, sigma * fw)[..., None] * (fw * np.array(motion))

        gm, gb = cfg.mouth_valence_gain, cfg.brow_valence_gain
        for side in ("l", "r"):
            out = math.copysign(1.0, lm[f"mouth_{side}"][0] - mid_x)
            # Positive valence: corners up and out, cheeks up.
            add(0, lm[f"mouth_{side}"], 0.09, (0.35 * out * gm, -gm))
            add(0, lm[f"cheek_{side}"], 0.12, (0.0, -0.35 * gm))
            # Negative valence: corners down and in, inner brows down and together.
            add(1, lm[f"mouth_{side}"], 0.09, (-0.25 * out * gm, gm))
            add(1, lm[f"brow_inner_{side}"], 0.06, (-0.5 * out * gb, gb))
            # Arousal: upper lids and brows up, lower lids down.
            eye = lm[f"eye_{side}"]
            add(2, eye + np.array([0.0, -0.035 * fw]), 0.04, (0.0, -cfg.eye_arousal_gain))
            add(2, eye + np.array([0.0, 0.035 * fw]), 0.04, (0.0, 0.4 * cfg.eye_arousal_gain))
            add(2, lm[f"brow_{side}"], 0.07, (0.0, -cfg.brow_arousal_gain))
        add(0, lm["lower_lip"], 0.07, (0.0, 0.25 * gm))  # Broad smile parts the lips.
        add(1, lm["lower_lip"], 0.07, (0.0, -0.7 * gm))  # Pressed lips hide the teeth.
        add(1, lm["upper_lip"], 0.06, (0.0, 0.3 * gm))
        add(3, lm["lower_lip"] + np.array([0.0, 0.04 * fw]), 0.1, (0.0, cfg.jaw_speech_gain))
        self.fields = fields

    def render(
        self,
        coefficients: np.ndarray,
        head: np.ndarray,
        light: tuple[float, float],
        noise_index: int,
        span: AbsentSpan | None,
    ) -> np.ndarray:
        """Renders one RGB uint8 frame.

        Args:
          coefficients: ``[4]`` expression coefficients (see ``n_fields``).
          head: ``(tx, ty, rotation_deg, scale)`` head pose.
          light: ``(gain, horizontal slope)`` of the lighting.
          noise_index: Which pre-drawn sensor-noise frame to add.
          span: The face-absent span covering this frame, if any.
        """
        w, h = self.cfg.frame_width, self.cfg.frame_height
        if span is not None and span.mode == "out_of_frame":
            img = self.background.copy()
        else:
            motion = np.tensordot(coefficients.astype(np.float32), self.fields, axes=1)
            map_x = self.grid[0] - motion[..., 0]
            map_y = self.grid[1] - motion[..., 1]
            self.work[self.roi] = cv2.remap(self.canvas, map_x, map_y, cv2.INTER_LINEAR)
            _, _, rot, scale = head
            affine = self._affine(head)
            person = cv2.warpAffine(self.work, affine, (w, h), flags=cv2.INTER_LINEAR)
            alpha = person[..., 3:].astype(np.float32) * (1.0 / 255.0)
            img = self.background + (person[..., :3].astype(np.float32) - self.background) * alpha
            if span is not None:  # Solid occluder (e.g. a hand or an object) over the whole head.
                centre = affine @ np.append(self.face_centre, 1.0)
                axes = (round(0.8 * self.face_width * scale), round(1.0 * self.face_width * scale))
                cv2.ellipse(img, tuple(round(c) for c in centre), axes, rot, 0, 360,
                            span.color, -1)  # fmt: skip
        img *= light[0] + light[1] * self.ramp
        img += self.noise_bank[noise_index]
        np.clip(img, 0, 255, out=img)
        return img.astype(np.uint8)

    def _affine(self, head: np.ndarray) -> np.ndarray:
        """Canvas -> frame transform of a head pose ``(tx, ty, rotation_deg, scale)``."""
        tx, ty, rot, scale = head
        affine = cv2.getRotationMatrix2D(tuple(self.landmarks["neck"]), rot, scale)
        affine[:, 2] += (tx - self.margin, ty - self.margin)
        return affine

    def face_box(self, head: np.ndarray, context: float = 1.4) -> tuple[float, float, float]:
        """``(centre x, centre y, side)`` in the frame of a square around the face, ``context`` face
        widths wide, for aligned-crop style outputs (Aff-Wild2 layout)."""
        centre = self._affine(head) @ np.append(self.face_centre, 1.0)
        return float(centre[0]), float(centre[1]), context * self.face_width * float(head[3])


def _head_motion(rng: np.random.Generator, arousal: np.ndarray, config: SyntheticConfig) -> np.ndarray:
    """Head pose per frame, ``[T, 4]`` = (tx px, ty px, rotation deg, scale)."""
    n, fps, w = len(arousal), config.fps, config.frame_width
    energy = 1.0 + config.head_motion_arousal_gain * (arousal + 1.0) / 2.0
    fast = smooth_noise(rng, n, config.head_motion_tau_s * fps, dims=3)
    slow = smooth_noise(rng, n, 4.0 * fps, dims=4)
    tx = w * (config.head_translation_sd * energy * fast[0] + config.head_drift_sd * slow[0])
    ty = w * (0.6 * config.head_translation_sd * energy * fast[1] + 0.5 * config.head_drift_sd * slow[1])
    rot = config.head_rotation_sd_deg * (energy * fast[2] + slow[2])
    scale = 1.0 + 0.03 * slow[3]
    limit = 0.12 * w
    return np.stack([np.clip(tx, -limit, limit), np.clip(ty, -limit, limit), np.clip(rot, -10, 10), scale], 1)


def _pick_codec(name: str) -> str:
    """Resolves ``"auto"`` to the first usable encoder of PyAV's bundled ffmpeg."""
    candidates = ("libx264", "mpeg4") if name == "auto" else (name,)
    for candidate in candidates:
        try:
            av.Codec(candidate, "w")
        except Exception:  # PyAV raises different error types across versions.
            continue
        return candidate
    raise RuntimeError(f"no usable video encoder among {candidates}")


def write_video(path: Path, frames: Iterator[np.ndarray], config: SyntheticConfig) -> str:
    """Encodes RGB uint8 frames to an mp4 at ``config.fps`` (yuv420p); returns the codec used."""
    codec = _pick_codec(config.video_codec)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(config.fps))
        stream.width, stream.height = config.frame_width, config.frame_height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = config.video_threads
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": str(config.video_crf)}
        else:
            stream.bit_rate = 40 * config.frame_width * config.frame_height
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, config.fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return codec


# ----------------------------------------------------------------------------------------------
# Audio.


def sample_voice(rng: np.random.Generator, config: SyntheticConfig) -> Voice:
    """Samples a speaker (F0, vocal tract length) and recording conditions (SNR, noise colour)."""
    lo, hi = config.f0_range_hz
    u = rng.uniform()
    f0 = lo * (hi / lo) ** u  # Log-uniform.
    # Higher-pitched voices tend to have shorter vocal tracts, i.e. higher formants.
    formant_scale = 0.92 + 0.2 * u + rng.normal(0, 0.03)
    return Voice(
        f0_hz=float(f0),
        formant_scale=float(formant_scale),
        snr_db=float(rng.uniform(*config.snr_db)),
        noise_color=float(rng.uniform(0.5, 0.98)),
    )


def _vowel_sos(formants: np.ndarray, sample_rate: int) -> np.ndarray:
    """Cascade of unit-DC-gain two-pole resonators, normalised to unit impulse-response energy."""
    sos = []
    for f, bw in zip(formants, _FORMANT_BANDWIDTHS, strict=True):
        r = math.exp(-math.pi * bw / sample_rate)
        a1, a2 = -2.0 * r * math.cos(2 * math.pi * f / sample_rate), r * r
        sos.append([1.0 + a1 + a2, 0.0, 0.0, 1.0, a1, a2])
    sos = np.array(sos)
    impulse = np.zeros(4096)
    impulse[0] = 1.0
    sos[0, :3] /= np.linalg.norm(scipy.signal.sosfilt(sos, impulse))
    return sos


def _glottal_flow(x: np.ndarray, open_frac: float = 0.4, close_frac: float = 0.16) -> np.ndarray:
    """Rosenberg glottal flow pulse evaluated at cycle phase ``x`` in [0, 1)."""
    rise = 0.5 * (1.0 - np.cos(np.pi * np.minimum(x, open_frac) / open_frac))
    fall = np.cos(0.5 * np.pi * np.clip(x - open_frac, 0.0, close_frac) / close_frac)
    return np.where(x < open_frac, rise, fall)


def _phrase_gate(
    rng: np.random.Generator, slot_arousal: np.ndarray, slot_rate: np.ndarray, cfg: SyntheticConfig
) -> np.ndarray:
    """Marks each syllable slot as spoken or silent, alternating phrases and pauses."""
    gate = np.zeros(len(slot_arousal), bool)
    k, speaking = 0, bool(rng.random() < 0.7)
    while k < len(gate):
        if speaking:
            seconds = rng.uniform(*cfg.phrase_s)
        else:
            stretch = max(0.2, 1.0 - cfg.pause_arousal_gain * slot_arousal[k])
            seconds = 0.15 + rng.exponential(cfg.pause_mean_s * stretch)
        m = max(1, round(seconds * slot_rate[k]))
        gate[k : k + m] = speaking
        k += m
        speaking = not speaking
    return gate


def synthesize_audio(
    valence: np.ndarray,
    arousal: np.ndarray,
    rng: np.random.Generator,
    config: SyntheticConfig,
    voice: Voice,
) -> tuple[np.ndarray, np.ndarray]:
    """Speech-like audio driven by per-frame valence/arousal.

    Args:
      valence: ``[T]`` latent valence at ``config.fps``.
      arousal: ``[T]`` latent arousal at ``config.fps``.
      rng: Random generator.
      config: Generator configuration.
      voice: Speaker and recording conditions.

    Returns:
      ``(waveform, jaw)``: float32 ``[T * samples_per_frame]`` audio in [-1, 1] at
      ``config.sample_rate``, and the ``[T]`` mean syllable envelope per frame (mouth opening).
    """
    sr, spf, n_frames = config.sample_rate, config.samples_per_frame, len(arousal)
    n = n_frames * spf
    centres = (np.arange(n_frames) + 0.5) * spf
    samples = np.arange(n)
    a = np.interp(samples, centres, arousal)
    v = np.interp(samples, centres, valence)
    a01 = (a + 1.0) / 2.0

    # Syllable clock: phase advances at a rate that rises with arousal, with a little jitter.
    lo, hi = config.syllable_rate_hz
    rate = (lo + (hi - lo) * a01) * (1.0 + 0.08 * smooth_noise(rng, n, 0.5 * sr)[0])
    phase = np.cumsum(rate) / sr
    slot = phase.astype(np.int64)
    frac = phase - slot
    n_slots = int(slot[-1]) + 1
    onsets = np.minimum(np.searchsorted(phase, np.arange(n_slots)), n - 1)
    gate = _phrase_gate(rng, a[onsets], rate[onsets], config)
    stress = rng.uniform(0.6, 1.0, n_slots) * gate
    env = np.sin(np.pi * frac) ** 1.5 * stress[slot]

    # F0: speaker base, arousal level shift, per-syllable accents (variability grows with
    # arousal) with phrase declination, plus slow jitter; interpolated between syllable centres.
    vlo, vhi = config.f0_variability_semitones
    accent = rng.standard_normal(n_slots) * (vlo + (vhi - vlo) * (a[onsets] + 1.0) / 2.0)
    phrase_pos = np.zeros(n_slots)
    run = 0
    for k in range(n_slots):  # Per syllable slot (a few per second), not per sample.
        run = run + 1 if gate[k] else 0
        phrase_pos[k] = run
    contour = np.interp(phase, np.arange(n_slots) + 0.5, accent - 0.25 * phrase_pos.clip(0, 8))
    jitter = 0.15 * smooth_noise(rng, n, 0.02 * sr)[0]
    semitones = config.f0_arousal_semitones * a + contour + jitter
    f0 = np.clip(voice.f0_hz * 2.0 ** (semitones / 12.0), 60.0, 450.0)

    # Glottal source: flow derivative with per-cycle shimmer and aspiration noise.
    cycles = np.cumsum(f0) / sr
    cycle_idx = cycles.astype(np.int64)
    flow = _glottal_flow(cycles - cycle_idx)
    source = np.diff(flow, prepend=flow[0])
    source *= 1.0 + 0.06 * rng.standard_normal(int(cycle_idx[-1]) + 1)[cycle_idx]
    source /= np.std(source) + 1e-12
    source += 0.08 * rng.standard_normal(n)

    # Vowel filter bank: every vowel filters the whole source (LTI, vectorised); each syllable
    # then selects its vowel. Switches fall between syllables, where the envelope is ~0.
    vowel = rng.integers(0, len(_VOWEL_FORMANTS), n_slots)[slot]
    voiced = np.zeros(n)
    for j, formants in enumerate(_VOWEL_FORMANTS):
        sos = _vowel_sos(np.minimum(formants * voice.formant_scale, 0.45 * sr), sr)
        voiced += np.where(vowel == j, scipy.signal.sosfilt(sos, source), 0.0)

    # Consonant: high-passed noise burst at syllable onsets, before the vowel nucleus.
    hp = scipy.signal.butter(2, 2500, btype="highpass", fs=sr, output="sos")
    burst = np.sin(np.pi * np.clip(frac / 0.2, 0.0, 1.0)) * (frac < 0.2)
    strength = rng.uniform(0, 1, n_slots) * (rng.random(n_slots) < 0.7) * gate
    consonant = scipy.signal.sosfilt(hp, rng.standard_normal(n)) * burst * strength[slot]

    loudness = 10.0 ** (config.loudness_arousal_db * a / 20.0)
    speech = loudness * (env * voiced + 0.6 * consonant)
    # Brightness: mix in a pre-emphasised copy (tilts the spectrum up).
    bright = np.clip(
        config.brightness + config.brightness_valence_gain * v + config.brightness_arousal_gain * a,
        0.0,
        None,
    )
    speech += bright * scipy.signal.lfilter([1.0, -0.95], [1.0], speech)

    # Background noise at the voice's SNR, measured over the spoken slots.
    white = rng.standard_normal(n)
    noise = scipy.signal.lfilter([1.0], [1.0, -voice.noise_color], white)
    noise = noise / np.std(noise) + 0.3 * white
    active = gate[slot]
    speech_power = np.mean(speech[active] ** 2) if active.any() else np.mean(speech**2)
    noise *= math.sqrt(speech_power / 10.0 ** (voice.snr_db / 10.0) / np.mean(noise**2))
    wave = speech + noise
    wave *= 0.8 / (np.max(np.abs(wave)) + 1e-12)
    jaw = env.reshape(n_frames, spf).mean(axis=1)
    return wave.astype(np.float32), jaw


# ----------------------------------------------------------------------------------------------
# Files.


def write_latent_csv(
    path: Path, valence: np.ndarray, arousal: np.ndarray, face_visible: np.ndarray, fps: int
) -> None:
    """Writes ``frame,time_s,valence,arousal,face_visible`` rows, one per frame."""
    rows = [LATENT_HEADER]
    rows += [
        f"{i},{i / fps:.2f},{v:.6f},{a:.6f},{int(f)}"
        for i, (v, a, f) in enumerate(zip(valence, arousal, face_visible, strict=True))
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def read_latent_csv(path: str | Path) -> dict[str, np.ndarray]:
    """Reads a latent CSV into arrays keyed by column name."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        header = f.readline().strip()
    if header != LATENT_HEADER:
        raise ValueError(f"{path}: expected header {LATENT_HEADER!r}, got {header!r}")
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    cols = dict(zip(LATENT_HEADER.split(","), table.T, strict=True))
    cols["frame"] = cols["frame"].astype(np.int64)
    cols["face_visible"] = cols["face_visible"].astype(bool)
    return cols


def _natural_key(name: str) -> tuple[str, int, str]:
    """Sorts ``train_2`` before ``train_10``."""
    m = re.fullmatch(r"(.*?)(\d+)", name)
    return (m.group(1), int(m.group(2)), "") if m else (name, -1, name)


def load_ratings(ratings_dir: str | Path, fps: int = 25) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads RECOLA gold-standard ratings in either circulating form.

    Args:
      ratings_dir: A RECOLA root (containing ``ratings_gold_standard/``) or that folder itself.
        ARFF files are looked up under ``{arousal,valence}/<id>.arff``, CSV files as ``<id>.csv``.
      fps: Expected rating rate; ARFF frame times must step by ``1 / fps``.

    Returns:
      ``{id: (valence, arousal)}`` in natural id order.

    Raises:
      FileNotFoundError: if no rating file is found.
      ValueError: naming the file, for unreadable or inconsistent files.
    """
    root = Path(ratings_dir)
    gold = root / "ratings_gold_standard" if (root / "ratings_gold_standard").is_dir() else root
    arff = {d: {p.stem: p for p in (gold / d).glob("*.arff")} for d in DIMENSIONS}
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for vid in sorted(arff["arousal"].keys() | arff["valence"].keys(), key=_natural_key):
        series = {}
        for dim in DIMENSIONS:
            if vid not in arff[dim]:
                raise ValueError(f"{gold / dim / (vid + '.arff')}: missing ({dim} rating of {vid})")
            times, values = recola_format.read_arff_gold(arff[dim][vid])
            if len(times) > 1 and not np.allclose(np.diff(times), 1.0 / fps, atol=0.006):
                raise ValueError(f"{arff[dim][vid]}: frame times do not step by 1/{fps} s")
            series[dim] = values
        if len(series["arousal"]) != len(series["valence"]):
            raise ValueError(
                f"{arff['arousal'][vid]} and {arff['valence'][vid]} differ in length "
                f"({len(series['arousal'])} vs {len(series['valence'])})"
            )
        out[vid] = (series["valence"], series["arousal"])
    for path in sorted(gold.glob("*.csv"), key=lambda p: _natural_key(p.stem)):
        table = recola_format.read_csv_gold(path)
        if path.stem in out:
            _LOG.warning("%s: %s already read from ARFF files; using the ARFF form", path, path.stem)
            continue
        out[path.stem] = (table[:, 1], table[:, 0])
    if not out:
        raise FileNotFoundError(f"no rating files under {gold} ({{arousal,valence}}/*.arff or *.csv)")
    return dict(sorted(out.items(), key=lambda kv: _natural_key(kv[0])))


# ----------------------------------------------------------------------------------------------
# Generation.


def _span_lookup(spans: Sequence[AbsentSpan], n_frames: int) -> list[AbsentSpan | None]:
    """Per-frame span (or None)."""
    per_frame: list[AbsentSpan | None] = [None] * n_frames
    for span in spans:
        per_frame[span.start : span.stop] = [span] * (span.stop - span.start)
    return per_frame


def _resolve_emotion(
    video_id: str,
    n_frames: int | None,
    emotion: tuple[np.ndarray, np.ndarray] | None,
    rng: np.random.Generator,
    config: SyntheticConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns the given ``(valence, arousal)`` (validated, clipped) or samples new ones."""
    if emotion is None:
        if n_frames is None or n_frames < 1:
            raise ValueError(f"{video_id}: need n_frames >= 1 when no emotion is given")
        return sample_emotion(rng, n_frames, config)
    valence, arousal = (np.asarray(x, np.float64) for x in emotion)
    if valence.shape != arousal.shape or valence.ndim != 1 or len(valence) < 1:
        raise ValueError(f"{video_id}: valence and arousal must be equal-length, non-empty 1-D arrays")
    if n_frames is not None and n_frames != len(valence):
        raise ValueError(f"{video_id}: n_frames={n_frames} but the emotion has {len(valence)} frames")
    if not (np.all(np.isfinite(valence)) and np.all(np.isfinite(arousal))):
        raise ValueError(f"{video_id}: non-finite emotion values")
    if np.abs(valence).max() > 1 or np.abs(arousal).max() > 1:
        _LOG.warning("%s: emotion values outside [-1, 1] are clipped", video_id)
    return np.clip(valence, -1.0, 1.0), np.clip(arousal, -1.0, 1.0)


def generate_video(
    out_dir: str | Path,
    video_id: str,
    n_frames: int | None,
    seed: int,
    config: SyntheticConfig = SyntheticConfig(),  # Frozen, so a shared default is safe.
    emotion: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Generates one recording (video, audio, gold standard, latent) under ``out_dir``.

    Args:
      out_dir: Corpus root; subfolders are created as needed.
      video_id: Recording id, e.g. ``train_1``; also seeds the recording.
      n_frames: Number of 25 fps frames; may be None when ``emotion`` is given.
      seed: Corpus seed.
      config: Generator configuration.
      emotion: Optional ``(valence, arousal)`` latent trajectories to use instead of sampling.

    Returns:
      JSON-serialisable description of the sampled per-video parameters.
    """
    out = Path(out_dir)
    subject = _Subject.sample(video_id, n_frames, seed, config, emotion)
    n_frames, valence, arousal = subject.n_frames, subject.valence, subject.arousal
    for sub in ("recordings_video", "recordings_audio", "latent"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    codec = write_video(out / "recordings_video" / f"{video_id}.mp4", subject.frames(), config)
    soundfile.write(
        out / "recordings_audio" / f"{video_id}.wav", subject.wave, config.sample_rate, subtype="PCM_16"
    )
    times = np.arange(n_frames) / config.fps
    for dim in DIMENSIONS:
        folder = out / "ratings_gold_standard" / dim
        folder.mkdir(parents=True, exist_ok=True)
        recola_format.write_arff_gold(
            folder / f"{video_id}.arff", video_id, times, subject.gold[dim], relation=f"GoldStandard_{dim}"
        )
    write_latent_csv(out / "latent" / f"{video_id}.csv", valence, arousal, subject.face_visible, config.fps)
    return {"id": video_id, "codec": codec, **subject.describe()}


@dataclasses.dataclass
class _Subject:
    """One synthetic person: latent emotion, gold standard, voice, and a frame renderer with its motion."""

    video_id: str
    valence: np.ndarray
    arousal: np.ndarray
    gold: dict[str, np.ndarray]
    wave: np.ndarray
    spans: list[AbsentSpan]
    face_visible: np.ndarray
    appearance: Appearance
    voice: Voice
    renderer: _FaceRenderer
    head: np.ndarray
    light: np.ndarray  # [T, 2]: gain, slope
    noise_index: np.ndarray
    coefficients: np.ndarray

    @classmethod
    def sample(
        cls,
        video_id: str,
        n_frames: int | None,
        seed: int,
        config: SyntheticConfig,
        emotion: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> _Subject:
        """Draws every random part of one recording from ``(seed, video_id)``."""
        rngs = video_rngs(seed, video_id)
        valence, arousal = _resolve_emotion(video_id, n_frames, emotion, rngs["emotion"], config)
        n_frames = len(valence)
        appearance = sample_appearance(rngs["appearance"], config)
        voice = sample_voice(rngs["voice"], config)
        spans = sample_absent_spans(rngs["visibility"], n_frames, config)
        face_visible = np.array([s is None for s in _span_lookup(spans, n_frames)])
        wave, jaw = synthesize_audio(valence, arousal, rngs["audio"], config, voice)
        gold = {
            "valence": annotate(valence, rngs["annotation"], config),
            "arousal": annotate(arousal, rngs["annotation"], config),
        }
        motion_rng = rngs["motion"]
        renderer = _FaceRenderer(appearance, config, motion_rng)
        head = _head_motion(motion_rng, arousal, config)
        drift = config.lighting_drift * smooth_noise(motion_rng, n_frames, 3.0 * config.fps, 2)
        light = np.stack([1.0 + drift[0], 0.5 * drift[1]], 1)  # Overall exposure; left-right balance.
        noise_index = motion_rng.integers(0, len(renderer.noise_bank), n_frames)
        coefficients = np.stack([np.maximum(valence, 0), np.maximum(-valence, 0), arousal, jaw], 1)
        return cls(
            video_id, valence, arousal, gold, wave, spans, face_visible, appearance, voice, renderer,
            head, light, noise_index, coefficients,
        )  # fmt: skip

    @property
    def n_frames(self) -> int:
        return len(self.valence)

    def frames(self) -> Iterator[np.ndarray]:
        """The rendered RGB frames, in order."""
        per_frame_span = _span_lookup(self.spans, self.n_frames)
        for t in range(self.n_frames):
            yield self.renderer.render(
                self.coefficients[t],
                self.head[t],
                tuple(self.light[t]),
                self.noise_index[t],
                per_frame_span[t],
            )

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable per-recording parameters (for ``synthetic.json``)."""
        return {
            "n_frames": self.n_frames,
            "face_visible_fraction": float(self.face_visible.mean()),
            "face_absent_spans": [[s.start, s.stop, s.mode] for s in self.spans],
            "appearance": dataclasses.asdict(self.appearance),
            "voice": dataclasses.asdict(self.voice),
        }


# ----------------------------------------------------------------------------------------------
# Aff-Wild2 layout.

AFFWILD2_FOLDERS = {"train": "Train_Set", "dev": "Validation_Set"}


def _aligned_crop(frame: np.ndarray, box: tuple[float, float, float], size: int) -> np.ndarray:
    """A ``size`` x ``size`` crop of ``frame`` around ``box`` = (centre x, centre y, side)."""
    cx, cy, side = box
    s = size / side
    affine = np.array([[s, 0.0, size / 2 - cx * s], [0.0, s, size / 2 - cy * s]])
    return cv2.warpAffine(frame, affine, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def _affwild2_labels(subject: _Subject, seed: int, invalid_fraction: float, config: SyntheticConfig) -> str:
    """The annotation file's text: header, then ``valence,arousal`` per frame with -5 over a few spans."""
    rng = np.random.default_rng([seed, 5, *subject.video_id.encode("utf-8")])
    spans = sample_absent_spans(
        rng, subject.n_frames, dataclasses.replace(config, face_absent_fraction=invalid_fraction)
    )
    invalid = np.zeros(subject.n_frames, bool)
    for span in spans:
        invalid[span.start : span.stop] = True
    rows = [
        "-5,-5" if bad else f"{v:.4f},{a:.4f}"
        for v, a, bad in zip(subject.gold["valence"], subject.gold["arousal"], invalid, strict=True)
    ]
    return "valence,arousal\n" + "\n".join(rows) + "\n"


def write_recording(
    path: Path, frames: Iterator[np.ndarray], wave: np.ndarray, config: SyntheticConfig
) -> str:
    """Encodes RGB frames (any even size) and a mono waveform into one mp4 (video + AAC audio)."""
    codec = _pick_codec(config.video_codec)
    frames = iter(frames)
    first = next(frames)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(config.fps))
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = config.video_threads
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": str(config.video_crf)}
        else:
            stream.bit_rate = 40 * first.shape[0] * first.shape[1]
        audio = container.add_stream("aac", rate=config.sample_rate)
        audio.layout = "mono"
        for i, rgb in enumerate(itertools.chain([first], frames)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, config.fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        block = 1024
        for start in range(0, len(wave), block):
            chunk = np.asarray(wave[start : start + block], np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            frame.sample_rate = config.sample_rate
            frame.pts = start
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    return codec


def generate_affwild2_recording(
    out_dir: str | Path,
    name: str,
    split: str,
    n_frames: int,
    seed: int,
    config: SyntheticConfig = SyntheticConfig(),  # Frozen, so a shared default is safe.
    *,
    pair: bool = False,
    crop_size: int = 112,
    invalid_fraction: float = 0.03,
) -> dict[str, Any]:
    """One recording in the Aff-Wild2 layout: ``videos/<name>.mp4`` with its audio, and per annotated
    person ``cropped_aligned/<id>/%05d.jpg`` and ``VA_Estimation_Challenge/<Set>/<id>.txt``.

    With ``pair``, two people (``<name>_left``, ``<name>_right``) sit side by side in the video and both
    speak on its one audio track (their waveforms mixed), as in Aff-Wild2's two-subject videos. Face-absent
    frames get no crop file; about ``invalid_fraction`` of the label rows are ``-5,-5`` (invalid).
    """
    out = Path(out_dir)
    ids = [f"{name}_left", f"{name}_right"] if pair else [name]
    subjects = [_Subject.sample(video_id, n_frames, seed, config) for video_id in ids]
    crop_dirs = [out / "cropped_aligned" / video_id for video_id in ids]
    for folder in crop_dirs:
        folder.mkdir(parents=True, exist_ok=True)
    labels_dir = out / "VA_Estimation_Challenge" / AFFWILD2_FOLDERS[split]
    for sub in (labels_dir, out / "videos", out / "latent"):
        sub.mkdir(parents=True, exist_ok=True)

    def frames() -> Iterator[np.ndarray]:
        streams = [subject.frames() for subject in subjects]
        for t in range(n_frames):
            images = [next(stream) for stream in streams]
            for subject, image, folder in zip(subjects, images, crop_dirs, strict=True):
                if subject.face_visible[t]:  # Aff-Wild2 has no crop where no face was found.
                    crop = _aligned_crop(image, subject.renderer.face_box(subject.head[t]), crop_size)
                    cv2.imwrite(str(folder / f"{t + 1:05d}.jpg"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            yield np.concatenate(images, axis=1)

    wave = np.mean([subject.wave for subject in subjects], axis=0)
    codec = write_recording(out / "videos" / f"{name}.mp4", frames(), wave, config)
    for subject in subjects:
        text = _affwild2_labels(subject, seed, invalid_fraction, config)
        (labels_dir / f"{subject.video_id}.txt").write_text(text, encoding="utf-8")
        write_latent_csv(
            out / "latent" / f"{subject.video_id}.csv", subject.valence, subject.arousal,
            subject.face_visible, config.fps,
        )  # fmt: skip
    return {
        "recording": name,
        "split": split,
        "codec": codec,
        "subjects": [{"id": subject.video_id, **subject.describe()} for subject in subjects],
    }


def _run_jobs(
    calls: dict[str, Callable[[], dict[str, Any]]], workers: int, desc: str, progress: bool
) -> dict[str, dict[str, Any]]:
    """Runs each recording's generator call, in `workers` spawned processes when > 1, under a progress bar."""
    results: dict[str, dict[str, Any]] = {}
    with tqdm(total=len(calls), desc=desc, unit="rec", disable=not progress) as bar:
        if workers <= 1:
            for name, call in calls.items():
                results[name] = call()
                bar.update()
            return results
        ctx = multiprocessing.get_context("spawn")  # Fork is unsafe once JAX/threads exist.
        with concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_worker_init
        ) as pool:
            futures = {pool.submit(call): name for name, call in calls.items()}
            for future in concurrent.futures.as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
    return results


def generate_affwild2_corpus(
    out_dir: str | Path,
    n_train: int,
    n_dev: int,
    seconds: float,
    seed: int,
    config: SyntheticConfig = SyntheticConfig(),  # Frozen, so a shared default is safe.
    workers: int = 1,
    progress: bool = True,
    *,
    crop_size: int = 112,
    invalid_fraction: float = 0.03,
) -> list[str]:
    """Generates a synthetic corpus in the Aff-Wild2 (ABAW VA challenge) layout.

    Recordings ``train_1..n_train`` and ``dev_1..n_dev``; the last training recording holds two people
    (``train_<n>_left`` / ``train_<n>_right`` sharing ``videos/train_<n>.mp4``). Same generative model
    as the RECOLA layout (see the module docstring); read it with ``pkd_jax.data.affwild2``.

    Returns:
      The annotated video ids (the pair counts twice), train first.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_frames = round(seconds * config.fps)
    if n_frames < 1 or n_train < 0 or n_dev < 0:
        raise ValueError("need seconds >= 1 frame and non-negative counts")
    jobs = [(f"train_{i}", "train", i == n_train) for i in range(1, n_train + 1)]
    jobs += [(f"dev_{i}", "dev", False) for i in range(1, n_dev + 1)]
    kwargs = dict(crop_size=crop_size, invalid_fraction=invalid_fraction)
    calls = {
        name: functools.partial(
            generate_affwild2_recording, out, name, split, n_frames, seed, config, pair=pair, **kwargs
        )
        for name, split, pair in jobs
    }
    results = _run_jobs(calls, workers, "synthetic Aff-Wild2 recordings", progress)
    ids = [s["id"] for name, _, _ in jobs for s in results[name]["subjects"]]
    meta = {
        "generator": "pkd_jax.data.synthetic",
        "layout": "affwild2",
        "seed": seed,
        "n_train": n_train,
        "n_dev": n_dev,
        "seconds": seconds,
        "crop_size": crop_size,
        "invalid_fraction": invalid_fraction,
        "ids": ids,
        "config": dataclasses.asdict(config),
        "recordings": [results[name] for name, _, _ in jobs],
    }
    (out / "synthetic.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return ids


def _worker_init() -> None:
    """Keeps each worker process on one core (OpenCV would otherwise spawn its own threads)."""
    cv2.setNumThreads(1)


def _warn_stale(out: Path, ids: Sequence[str]) -> None:
    """Warns about recordings left in ``out`` by an earlier run with other ids."""
    wanted = set(ids)
    stale = sorted(
        str(p)
        for sub in (
            "recordings_video",
            "recordings_audio",
            "latent",
            *(f"ratings_gold_standard/{d}" for d in DIMENSIONS),
        )
        for p in (out / sub).glob("*.*")
        if p.stem not in wanted
    )
    if stale:
        _LOG.warning("%d files in %s do not belong to this corpus, e.g. %s", len(stale), out, stale[0])


def _readme(meta: dict[str, Any]) -> str:
    """Human-readable description written next to ``synthetic.json``."""
    return f"""Synthetic RECOLA-layout corpus generated by pkd_jax.data.synthetic.

Seed: {meta["seed"]}   recordings: {len(meta["ids"])}   ratings_from: {meta["ratings_from"]}
Reproduce (Python):
  meta = json.load(open("synthetic.json"))
  generate_corpus(DIR, meta["n_train"], meta["n_dev"], meta["seconds"], meta["seed"],
                  meta["ratings_from"], SyntheticConfig.from_dict(meta["config"]),
                  n_test=meta["n_test"] or 0)

Layout:
  recordings_video/<id>.mp4                   {meta["config"]["fps"]} fps, yuv420p, \
{meta["config"]["frame_width"]}x{meta["config"]["frame_height"]}
  recordings_audio/<id>.wav                   {meta["config"]["sample_rate"]} Hz mono, 16-bit PCM
  ratings_gold_standard/{{arousal,valence}}/<id>.arff   gold standard, one row per frame
  latent/<id>.csv                             frame,time_s,valence,arousal,face_visible

The gold standard is the latent trajectory delayed by {meta["config"]["annotator_lag_s"]} s plus
smooth noise (sd {meta["config"]["annotator_noise_sd"]}). The face shows valence clearly and
arousal weakly; the audio (loudness, pitch, syllable rate) carries arousal. face_visible = 0 marks
frames where the face is occluded or out of frame. Full configuration and per-recording
parameters: synthetic.json. Generative model: see the docstring of pkd_jax/data/synthetic.py.
"""


def generate_corpus(
    out_dir: str | Path,
    n_train: int,
    n_dev: int,
    seconds: float,
    seed: int,
    ratings_from: str | Path | None = None,
    config: SyntheticConfig = SyntheticConfig(),  # Frozen, so a shared default is safe.
    workers: int = 1,
    progress: bool = True,
    *,
    n_test: int = 0,
) -> list[str]:
    """Generates a synthetic corpus in the RECOLA layout.

    Args:
      out_dir: Corpus root (created if needed; existing files of the same ids are overwritten).
      n_train: Number of ``train_*`` recordings (ignored with ``ratings_from``).
      n_dev: Number of ``dev_*`` recordings (ignored with ``ratings_from``).
      seconds: Length of each recording (ignored with ``ratings_from``).
      seed: Corpus seed; recording ``id`` depends only on ``(seed, id)``.
      ratings_from: Optional RECOLA folder whose gold-standard ratings become the latent
        trajectories: one recording per rating file, same ids and lengths.
      config: Generator configuration.
      workers: Number of processes (spawned, so scripts calling this with ``workers > 1`` need an
        ``if __name__ == "__main__":`` guard).
      progress: Show a progress bar across recordings.
      n_test: Number of ``test_*`` recordings, with gold-standard ratings like the others (a held-out
        test split; ignored with ``ratings_from``).

    Returns:
      The recording ids, in order: train, dev, then test.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if ratings_from is not None:
        ratings = load_ratings(ratings_from, config.fps)
        jobs = [(vid, None, emotion) for vid, emotion in ratings.items()]
    else:
        n_frames = round(seconds * config.fps)
        if n_frames < 1 or min(n_train, n_dev, n_test) < 0:
            raise ValueError("need seconds >= 1 frame and non-negative counts")
        counts = {"train": n_train, "dev": n_dev, "test": n_test}
        ids = [f"{split}_{i}" for split, n in counts.items() for i in range(1, n + 1)]
        jobs = [(vid, n_frames, None) for vid in ids]
    ids = [job[0] for job in jobs]
    _warn_stale(out, ids)
    calls = {
        vid: functools.partial(generate_video, out, vid, n, seed, config, emotion) for vid, n, emotion in jobs
    }
    results = _run_jobs(calls, workers, "synthetic recordings", progress)
    meta = {
        "generator": "pkd_jax.data.synthetic",
        "seed": seed,
        # With ratings_from these four are ignored: ids and lengths come from the rating files.
        "n_train": None if ratings_from is not None else n_train,
        "n_dev": None if ratings_from is not None else n_dev,
        "n_test": None if ratings_from is not None else n_test,
        "seconds": None if ratings_from is not None else seconds,
        "ratings_from": None if ratings_from is None else str(ratings_from),
        "ids": ids,
        "config": dataclasses.asdict(config),
        "recordings": [results[vid] for vid in ids],
    }
    (out / "synthetic.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    (out / "README.txt").write_text(_readme(meta), encoding="utf-8")
    return ids


def _define_flags() -> None:
    """Defines the CLI flags (only when run as a script, so importers' flags never clash)."""
    from absl import flags

    flags.DEFINE_string("out", None, "Output corpus root.", required=True)
    flags.DEFINE_integer("train", 9, "Number of train_* recordings.")
    flags.DEFINE_integer("dev", 9, "Number of dev_* recordings.")
    flags.DEFINE_integer(
        "test", 0, "Number of test_* recordings (held-out, with ratings; RECOLA layout only)."
    )
    flags.DEFINE_float("seconds", 60.0, "Length of each recording in seconds.")
    flags.DEFINE_integer("seed", 0, "Corpus seed (non-negative).")
    flags.DEFINE_string("ratings_from", None, "RECOLA folder whose gold-standard ratings become the latent.")
    flags.DEFINE_integer("workers", 1, "Worker processes.")
    flags.DEFINE_integer("frame_size", 256, "Frame width and height in pixels (even).")
    flags.DEFINE_enum("layout", "recola", ["recola", "affwild2"], "Corpus layout to write.")


def main(argv: Sequence[str]) -> None:
    """CLI entry point."""
    from absl import app, flags

    del argv
    f = flags.FLAGS
    if f.ratings_from:
        logging.info("--ratings_from given: ids and lengths come from the rating files")
    config = SyntheticConfig(frame_width=f.frame_size, frame_height=f.frame_size)
    if f.layout == "affwild2":
        if f.ratings_from or f.test:
            raise app.UsageError("--ratings_from and --test are for the RECOLA layout only")
        ids = generate_affwild2_corpus(f.out, f.train, f.dev, f.seconds, f.seed, config, workers=f.workers)
    else:
        ids = generate_corpus(
            f.out, f.train, f.dev, f.seconds, f.seed, f.ratings_from, config, workers=f.workers, n_test=f.test
        )
    print(f"wrote {len(ids)} recordings to {f.out}")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
