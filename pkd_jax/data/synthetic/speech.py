"""Audio: speaker sampling and source-filter speech synthesis driven by the latent emotion.

* **Audio.** Source-filter speech at 16 kHz: a Rosenberg glottal pulse train with shimmer and
  aspiration noise; F0 per speaker (``f0_range_hz``) raised by arousal with arousal-scaled
  intonation variability; syllables (rate rising with arousal) grouped into phrases separated by
  pauses (shorter at high arousal); per-syllable vowel formant filters (a five-vowel filter bank)
  and consonant noise bursts; loudness rising with arousal; brightness (pre-emphasis mix)
  weakly rising with valence and arousal; coloured background noise at a per-video SNR. Audio
  therefore carries arousal far better than the face does (the privileged modality).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.signal

from pkd_jax.data.synthetic.config import SyntheticConfig, Voice
from pkd_jax.data.synthetic.signals import smooth_noise

# Vowel formants (Hz) for /a e i o u/ (Peterson & Barney style averages) and bandwidths.
_VOWEL_FORMANTS = np.array(
    [(730, 1090, 2440), (530, 1840, 2480), (270, 2290, 3010), (570, 840, 2410), (300, 870, 2240)],
    dtype=np.float64,
)
_FORMANT_BANDWIDTHS = np.array([90.0, 110.0, 170.0])


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
    sections: list[list[float]] = []
    for f, bw in zip(formants, _FORMANT_BANDWIDTHS, strict=True):
        r = math.exp(-math.pi * bw / sample_rate)
        a1, a2 = -2.0 * r * math.cos(2 * math.pi * f / sample_rate), r * r
        sections.append([1.0 + a1 + a2, 0.0, 0.0, 1.0, a1, a2])
    sos = np.array(sections)
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
