"""Audio loading (wav files or a video's audio track), length fitting and the log-mel spectrogram.

Alignment with the video: the waveform is padded or trimmed to exactly T video frames, and mel frame j is
centred on the middle of the hop [j * hop, (j + 1) * hop) (the signal is zero-padded by
(n_fft - hop) / 2 on both sides, no librosa centring), so there are exactly `len(audio) / hop` mel frames
and video frame t owns mel frames [k t, k t + k) with k = sample_rate / (fps * hop).
"""

from __future__ import annotations

from pathlib import Path

import av
import librosa
import numpy as np
import soundfile


class AudioError(ValueError):
    """Missing or unreadable audio; the message names the file."""


def _to_mono_rate(samples: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    """[n, channels] or [n] float -> float32 [n'] mono at `sample_rate`."""
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    samples = np.asarray(samples, np.float32)
    if rate != sample_rate:
        samples = librosa.resample(samples, orig_sr=rate, target_sr=sample_rate, res_type="soxr_hq")
    return np.asarray(samples, np.float32)


def load_wav(path: str | Path, sample_rate: int) -> np.ndarray:
    """float32 [n] mono samples of an audio file (any libsndfile format), resampled to `sample_rate`."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file missing")
    try:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(f"{path}: cannot read audio ({e})") from e
    if samples.shape[0] == 0:
        raise AudioError(f"{path}: no audio samples")
    return _to_mono_rate(samples, rate, sample_rate)


def load_container_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """float32 [n] mono samples of the first audio stream of a video container, at `sample_rate`."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: video file (audio source) missing")
    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"{path}: no audio stream in the container")
            # FFmpeg's resampler does the downmix and rate conversion while decoding, in float32.
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            for frame in container.decode(container.streams.audio[0]):
                chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    except (av.FFmpegError, OSError) as e:
        raise AudioError(f"{path}: cannot decode the audio track ({e})") from e
    if not chunks or sum(len(c) for c in chunks) == 0:
        raise AudioError(f"{path}: no audio samples in the container")
    return np.concatenate(chunks).astype(np.float32)


def fit_length(samples: np.ndarray, length: int) -> np.ndarray:
    """Trims to `length` samples or pads the end with silence."""
    if len(samples) >= length:
        return samples[:length]
    return np.pad(samples, (0, length - len(samples)))


def log_mel(
    samples: np.ndarray,
    *,
    sample_rate: int,
    n_fft: int,
    hop: int,
    n_mels: int,
    fmin: float,
    fmax: float,
    log_floor: float,
) -> np.ndarray:
    """float16 [len(samples) / hop, n_mels]: log(mel power + log_floor), hop-centred frames.

    Args:
      samples: Mono waveform whose length is a multiple of `hop`.
      sample_rate: Its sampling rate.
      n_fft: Window and FFT length in samples (Hann window).
      hop: Frame step in samples.
      n_mels: Mel bands.
      fmin: Lowest band edge (Hz).
      fmax: Highest band edge (Hz).
      log_floor: Added before the log so silence stays finite.
    """
    if len(samples) % hop or not len(samples):
        raise ValueError(f"audio length {len(samples)} is not a positive multiple of hop={hop}")
    left = (n_fft - hop) // 2
    # Zero padding: outside the recording is silence, not a reflection of the signal.
    padded = np.pad(np.asarray(samples, np.float32), (left, n_fft - hop - left))
    mel = librosa.feature.melspectrogram(
        y=padded,
        sr=sample_rate,
        n_fft=n_fft,
        hop_length=hop,
        center=False,
        power=2.0,
        n_mels=n_mels,
        fmin=fmin,
        fmax=fmax,
    )
    return np.log(mel.T + log_floor).astype(np.float16)
