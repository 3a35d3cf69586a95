"""Configuration and record types of the synthetic corpus generator.

:class:`SyntheticConfig` holds every knob of the generative model; :class:`Appearance`, :class:`Voice`
and :class:`AbsentSpan` are the per-video draws; ``DIMENSIONS`` and ``LATENT_HEADER`` name the rated
dimensions and the columns of the latent CSV.
"""

from __future__ import annotations

import dataclasses
from typing import Any

DIMENSIONS = ("arousal", "valence")
LATENT_HEADER = "frame,time_s,valence,arousal,face_visible"


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generative model (see ``pkd_jax.data.synthetic``). Ranges are ``(low, high)``."""

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
    eye_arousal_gain: float = 0.019  # calibrated (see the package docstring, "Calibration")
    brow_arousal_gain: float = 0.024
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
    # Physiology (RECOLA layout only): recordings_physio/<id>.csv, ECG and EDA (see ``physio``).
    physio: bool = True
    physio_sample_rate: int = 250
    heart_rate_bpm: tuple[float, float] = (60.0, 80.0)  # Resting heart rate of a subject.
    heart_rate_arousal_bpm: tuple[float, float] = (10.0, 15.0)  # Rise per unit of arousal.
    heart_rate_valence_bpm: float = 1.0  # Barely any.
    heart_rate_latency_s: float = 2.0
    heart_rate_tau_s: float = 1.0  # Low-pass of the cardiac response.
    heart_rate_noise_bpm: float = 1.5  # Slow heart-rate variability besides RSA (OU, 3 s).
    rsa_bpm: tuple[float, float] = (2.0, 5.0)  # Respiratory sinus arrhythmia at rest, halved at arousal +1.
    respiration_hz: tuple[float, float] = (0.2, 0.3)
    ecg_r_amplitude_mv: tuple[float, float] = (0.8, 1.6)
    scl_us: tuple[float, float] = (2.0, 10.0)  # Skin conductance level of a subject.
    scl_arousal_us: float = 0.5  # Slow rise of the level per unit of arousal (20 s low-pass, 3 s late).
    scr_per_minute: float = 5.0  # Skin conductance responses at arousal 0 ...
    scr_arousal_log_gain: float = 1.2  # ... times exp(gain * arousal): 1.5 / min at -1, 17 / min at +1.
    scr_amplitude_us: float = 0.2  # Median SCR at arousal 0, times (1 + arousal / 2).
    scr_latency_s: tuple[float, float] = (1.0, 3.0)  # From the arousing moment to the SCR's onset.
    scr_rise_s: float = 0.75  # Bateman time constants: peak 1.5 s after onset, ...
    scr_decay_s: float = 4.0  # ... then a decay over several seconds.

    def __post_init__(self) -> None:
        if self.frame_width % 2 or self.frame_height % 2:
            raise ValueError("frame_width and frame_height must be even (yuv420p)")
        if min(self.frame_width, self.frame_height) < 32:
            raise ValueError("frames must be at least 32x32")
        if self.sample_rate % self.fps:
            raise ValueError("sample_rate must be a multiple of fps")
        if not 0.0 <= self.face_absent_fraction < 1.0:
            raise ValueError("face_absent_fraction must be in [0, 1)")
        if self.physio_sample_rate < 100 or self.physio_sample_rate % self.fps:
            raise ValueError("physio_sample_rate must be a multiple of fps and at least 100 Hz (ECG R-peaks)")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SyntheticConfig:
        """Rebuilds a config from ``dataclasses.asdict`` output, e.g. ``synthetic.json["config"]``."""
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**fields)

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
