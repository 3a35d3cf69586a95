"""Random signals: per-video generators, smooth noise, the latent emotion, its annotation and the
face-absent spans.

* **Emotion.** Each dimension is ``tanh(offset + scale * x(t) + events(t))``: ``x`` is a
  unit-variance critically damped Ornstein-Uhlenbeck process (two cascaded AR(1) filters with
  time constant ``emotion_tau_s``, hence smooth), ``offset`` a per-video mean, and ``events``
  occasional slow Hann-shaped excursions (Poisson, ``events_per_minute``). Valence and arousal
  innovations and event amplitudes are correlated (``va_correlation``). With ``ratings_from``, the
  trajectories are instead read from real RECOLA rating files and used as the latent as-is.
* **Annotation.** Gold standard ``g(t) = clip(latent(t - annotator_lag_s) + n(t), -1, 1)``, with
  ``n`` smooth OU noise of std ``annotator_noise_sd``; the first ``lag`` frames repeat
  ``latent(0)``.
* **Face absence.** Non-overlapping spans covering ``face_absent_fraction`` of the frames, each
  rendered as a solid occluder or as the person leaving the frame (``face_visible = 0``).

Randomness is derived from ``(seed, video_id)`` via ``numpy.random.SeedSequence``, so a recording
does not depend on which other recordings are generated or on the number of workers.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.signal

from pkd_jax.data.synthetic.config import AbsentSpan, SyntheticConfig


def video_rngs(seed: int, video_id: str) -> dict[str, np.random.Generator]:
    """Independent generators per component, derived from ``(seed, video_id)`` only."""
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    root = np.random.SeedSequence([seed, *video_id.encode("utf-8")])
    # Append only: the streams before a new name stay as they were (SeedSequence children by position).
    names = ("emotion", "annotation", "appearance", "voice", "visibility", "motion", "audio", "physio")
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
        r, g, b = (float(c) for c in rng.uniform(20, 235, size=3))
        spans.append(AbsentSpan(int(start), int(start + length), mode, (r, g, b)))
        start += length
    return spans
