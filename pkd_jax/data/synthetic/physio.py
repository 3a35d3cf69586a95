"""Physiology of a synthetic recording: ECG and EDA driven by its latent arousal (RECOLA layout only).

Written as ``recordings_physio/<id>.csv`` (``time;ECG;EDA``, seconds, mV, microsiemens) at
``physio_sample_rate`` (250 Hz), the layout ``pkd_jax.data.physio`` reads. The structure follows
physiology, so that the signals carry arousal and hardly valence:

* **Heart rate** (bpm): a subject's resting rate (60-80) plus 10-15 bpm per unit of arousal, low-passed
  (1 s) and 2 s late, plus 1 bpm per unit of valence (barely any); on top, respiratory sinus arrhythmia
  (2-5 bpm at 0.2-0.3 Hz; breathing speeds up and the arrhythmia halves at high arousal, vagal
  withdrawal) and slow variability (OU noise, 1.5 bpm, 3 s). R-peaks fall where the integrated rate
  crosses a whole beat, with 4 ms of jitter.
* **ECG** (mV): one beat of neurokit2's ECGSYN simulator (``nk.ecg_simulate``, McSharry et al. 2003)
  placed at every R-peak, its ST-T part shortened with the RR interval (Bazett), scaled to a subject's
  R amplitude (0.8-1.6 mV); respiratory baseline wander, 50 Hz hum and neurokit2's measurement noise
  (``nk.signal_distort``, Laplace noise at 5, 10 and 25 Hz) on top.
* **EDA** (microsiemens): a subject's skin conductance level (2-10), drifting slowly (OU, 0.3, 30 s) and
  rising 0.5 per unit of arousal (20 s low-pass, 3 s late), plus skin conductance responses. SCRs are
  triggered at a rate of 5 / min x exp(1.2 x arousal) (Poisson; 1.5 / min at arousal -1, 17 / min at +1),
  start 1-3 s after their trigger, have an amplitude of 0.2 x (1 + arousal / 2) with a log-normal spread,
  and the Bateman shape (exp(-t / 4 s) - exp(-t / 0.75 s): rise to the peak in 1.5 s, decay over several
  seconds), the SCR model neurokit2's EDA simulator documents. Measurement noise as for the ECG.

Everything is drawn from the recording's own ``physio`` random stream (``signals.video_rngs``), so the
audio, video and ratings of a recording are the same with or without physiology.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import scipy.signal

from pkd_jax.data.synthetic.config import SyntheticConfig
from pkd_jax.data.synthetic.signals import smooth_noise

PHYSIO_HEADER = "time;ECG;EDA"
_BEAT_BEFORE_S, _BEAT_QRS_END_S, _BEAT_AFTER_S = 0.3, 0.05, 0.5  # beat window around the R-peak at 60 bpm


@dataclasses.dataclass(frozen=True)
class Physio:
    """One recording's physiology at ``sample_rate``, and its ground truth."""

    sample_rate: int
    ecg: np.ndarray  # mV
    eda: np.ndarray  # microsiemens
    heart_rate: np.ndarray  # bpm, the rate the beats were drawn from
    beats: np.ndarray  # R-peak times in seconds
    scr_onsets: np.ndarray  # seconds
    scr_amplitudes: np.ndarray  # microsiemens
    subject: dict[str, float]  # the drawn per-subject parameters

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable summary (for ``synthetic.json``)."""
        return {
            **self.subject,
            "mean_heart_rate_bpm": round(float(self.heart_rate.mean()), 2),
            "scr_count": len(self.scr_onsets),
        }


@functools.lru_cache(maxsize=4)
def beat_template(sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(times relative to the R-peak in s, mV) of one ECGSYN beat at 60 bpm, baseline 0, tapered ends."""
    import neurokit2 as nk

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ecg = nk.ecg_simulate(
            duration=6, sampling_rate=sample_rate, heart_rate=60, heart_rate_std=0, noise=0, random_state=0
        )
    ecg = np.asarray(ecg, np.float64)
    middle = 3 * sample_rate
    r = middle - sample_rate // 2 + int(np.argmax(ecg[middle - sample_rate // 2 : middle + sample_rate // 2]))
    start, stop = r - round(_BEAT_BEFORE_S * sample_rate), r + round(_BEAT_AFTER_S * sample_rate) + 1
    beat = ecg[start:stop].copy()
    edge = max(2, sample_rate // 50)
    baseline = np.linspace(beat[:edge].mean(), beat[-edge:].mean(), len(beat))
    beat -= baseline
    taper = np.hanning(2 * edge)
    beat[:edge] *= taper[:edge]
    beat[-edge:] *= taper[edge:]
    beat /= beat.max()
    return (np.arange(start, stop) - r) / sample_rate, beat


def _lowpass(x: np.ndarray, tau: float) -> np.ndarray:
    """First-order low-pass with time constant ``tau`` samples, starting settled at ``x[0]``."""
    a = math.exp(-1.0 / max(tau, 1e-6))
    y, _ = scipy.signal.lfilter([1 - a], [1, -a], x, zi=[a * x[0]])
    return y


def _delay(x: np.ndarray, samples: int) -> np.ndarray:
    samples = min(samples, len(x))
    return np.concatenate([np.full(samples, x[0]), x[: len(x) - samples]])


def _slow_noise(rng: np.random.Generator, n: int, tau_s: float, sample_rate: int) -> np.ndarray:
    """Unit-variance smooth noise, drawn at 10 Hz and interpolated (cheap for long time constants)."""
    coarse = smooth_noise(rng, n * 10 // sample_rate + 2, tau_s * 10)[0]
    return np.interp(np.arange(n) / sample_rate, np.arange(len(coarse)) / 10, coarse)


def _add_noise(x: np.ndarray, rng: np.random.Generator, sample_rate: int, amplitude: float) -> np.ndarray:
    """neurokit2's band-limited Laplace noise of about ``amplitude`` (signal units)."""
    import neurokit2 as nk

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frequencies = [f for f in (5, 10, 25) if f <= sample_rate / 10]
        return np.asarray(
            nk.signal_distort(
                x,
                sampling_rate=sample_rate,
                noise_amplitude=[amplitude / max(float(np.std(x, ddof=1)), 1e-9)] * len(frequencies),
                noise_frequency=frequencies,
                noise_shape="laplace",
                random_state=rng,
                silent=True,
            ),
            np.float64,
        )


def _ecg(beats: np.ndarray, n: int, sample_rate: int, amplitude: float) -> np.ndarray:
    """Beat templates at the R-peak times (fractional samples), the ST-T part scaled by sqrt(RR)."""
    times, beat = beat_template(sample_rate)
    ecg = np.zeros(n)
    rr = np.diff(beats, prepend=beats[0] - 1.0) if len(beats) else beats
    for r, interval in zip(beats, rr, strict=True):
        stretch = math.sqrt(min(max(interval, 0.3), 2.0))
        end = r + _BEAT_QRS_END_S + (_BEAT_AFTER_S - _BEAT_QRS_END_S) * stretch
        first, stop = (
            max(0, math.ceil((r - _BEAT_BEFORE_S) * sample_rate)),
            min(n, math.floor(end * sample_rate)),
        )
        if stop <= first:
            continue
        offset = np.arange(first, stop) / sample_rate - r
        late = offset > _BEAT_QRS_END_S
        offset[late] = _BEAT_QRS_END_S + (offset[late] - _BEAT_QRS_END_S) / stretch
        ecg[first:stop] += np.interp(offset, times, beat, left=0.0, right=0.0)
    return amplitude * ecg


def _bateman(impulses: np.ndarray, sample_rate: int, rise_s: float, decay_s: float) -> np.ndarray:
    """Impulses convolved with exp(-t / decay) - exp(-t / rise), scaled to a peak of 1 per unit impulse."""
    slow, fast = (math.exp(-1.0 / (tau * sample_rate)) for tau in (decay_s, rise_s))
    peak_t = math.log(decay_s / rise_s) * rise_s * decay_s / (decay_s - rise_s)
    peak = math.exp(-peak_t / decay_s) - math.exp(-peak_t / rise_s)
    decaying = scipy.signal.lfilter([1.0], [1.0, -slow], impulses)
    return (decaying - scipy.signal.lfilter([1.0], [1.0, -fast], impulses)) / peak


def synthesize_physio(
    valence: np.ndarray, arousal: np.ndarray, rng: np.random.Generator, config: SyntheticConfig
) -> Physio:
    """ECG and EDA of a recording from its latent trajectories at ``config.fps`` (see the module docstring)."""
    sr, fps = config.physio_sample_rate, config.fps
    n = len(arousal) * sr // fps
    t = np.arange(n) / sr
    frame_t = np.arange(len(arousal)) / fps
    a, v = np.interp(t, frame_t, arousal), np.interp(t, frame_t, valence)
    subject = {
        "heart_rate_bpm": float(rng.uniform(*config.heart_rate_bpm)),
        "heart_rate_arousal_bpm": float(rng.uniform(*config.heart_rate_arousal_bpm)),
        "rsa_bpm": float(rng.uniform(*config.rsa_bpm)),
        "respiration_hz": float(rng.uniform(*config.respiration_hz)),
        "ecg_r_amplitude_mv": float(rng.uniform(*config.ecg_r_amplitude_mv)),
        "scl_us": float(rng.uniform(*config.scl_us)),
    }
    # Heart rate: the cardiac response to arousal (and a trace of valence), RSA, slow variability.
    latency = round(config.heart_rate_latency_s * sr)
    drive = _delay(_lowpass(a, config.heart_rate_tau_s * sr), latency)
    pleasure = _delay(_lowpass(v, config.heart_rate_tau_s * sr), latency)
    breathing = 2 * np.pi * np.cumsum(subject["respiration_hz"] * (1 + 0.15 * drive)) / sr
    rsa = subject["rsa_bpm"] * (1 - 0.25 * (drive + 1)) * np.sin(breathing + rng.uniform(0, 2 * np.pi))
    heart_rate = (
        subject["heart_rate_bpm"]
        + subject["heart_rate_arousal_bpm"] * drive
        + config.heart_rate_valence_bpm * pleasure
        + config.heart_rate_noise_bpm * _slow_noise(rng, n, 3.0, sr)
        + rsa
    )
    phase = rng.uniform(0, 1) + np.cumsum(heart_rate / 60.0) / sr
    beat_numbers = np.arange(math.ceil(phase[0]), math.floor(phase[-1]) + 1)
    beats = np.interp(beat_numbers, phase, t) + rng.normal(0, 0.004, len(beat_numbers))
    ecg = _ecg(np.sort(beats), n, sr, subject["ecg_r_amplitude_mv"])
    ecg += 0.08 * np.sin(breathing) + 0.05 * _slow_noise(rng, n, 5.0, sr) + 0.01 * np.sin(2 * np.pi * 50 * t)
    ecg = _add_noise(ecg, rng, sr, 0.02)
    # EDA: a drifting level and skin conductance responses triggered in proportion to arousal.
    latest = config.scr_latency_s[1]
    max_rate = config.scr_per_minute / 60 * math.exp(abs(config.scr_arousal_log_gain))
    candidates = rng.uniform(-latest, n / sr, rng.poisson(max_rate * (n / sr + latest)))
    a_then = np.interp(candidates, t, a)
    rate = config.scr_per_minute / 60 * np.exp(config.scr_arousal_log_gain * a_then)
    keep = rng.uniform(0, max_rate, len(candidates)) < rate
    triggers, a_then = candidates[keep], a_then[keep]
    onsets = triggers + rng.uniform(*config.scr_latency_s, len(triggers))
    amplitudes = config.scr_amplitude_us * (1 + 0.5 * a_then) * rng.lognormal(0, 0.4, len(triggers))
    order = np.argsort(onsets)
    onsets, amplitudes = onsets[order], amplitudes[order]
    inside = (onsets >= 0) & (onsets < n / sr)
    impulses = np.zeros(n)
    np.add.at(impulses, np.round(onsets[inside] * sr).astype(np.int64).clip(0, n - 1), amplitudes[inside])
    phasic = _bateman(impulses, sr, config.scr_rise_s, config.scr_decay_s)
    level_drive = _delay(_lowpass(a, 20.0 * sr), round(3.0 * sr))
    tonic = subject["scl_us"] + 0.3 * _slow_noise(rng, n, 30.0, sr) + config.scl_arousal_us * level_drive
    eda = _add_noise(np.maximum(tonic, 0.5) + phasic, rng, sr, 0.005)
    return Physio(
        sr, ecg, eda, heart_rate, np.sort(beats), onsets[inside], amplitudes[inside],
        {k: round(x, 4) for k, x in subject.items()},
    )  # fmt: skip


def write_physio_csv(path: str | Path, physio: Physio) -> None:
    """Writes ``time;ECG;EDA`` rows, one per sample (seconds, mV, microsiemens)."""
    rate = physio.sample_rate
    rows = [PHYSIO_HEADER]
    samples = zip(physio.ecg, physio.eda, strict=True)
    rows += [f"{i / rate:.6f};{ecg:.4f};{eda:.4f}" for i, (ecg, eda) in enumerate(samples)]
    Path(path).write_text("\n".join(rows) + "\n", encoding="utf-8")
