"""Per-frame physiological features of a recording: heart rate, heart-rate variability, skin conductance.

`physio_features` turns a `PhysioRecording` into float32 [T, 4], one row per video frame (frame t covers
[t / fps, (t + 1) / fps)), columns `PHYSIO_FEATURES`, in raw units (normalisation belongs to the input
pipeline):

- **heart_rate** (beats per minute): R-peaks of the cleaned ECG (neurokit2's `ecg_clean`, a 0.5 Hz
  high-pass and a powerline notch, then `ecg_peaks` with its artifact correction), turned into an
  instantaneous rate by `ecg_rate` (interpolated between beats), averaged over each frame. Heart rate
  rises with arousal (sympathetic drive, vagal withdrawal) within a few seconds.
- **hrv_rmssd** (ms): the root mean square of successive RR-interval differences over a centred 10 s
  window, evaluated once per second and interpolated to the frames. RMSSD indexes vagal (parasympathetic)
  activity, which falls under stress and arousal; 10 s is the shortest window that holds enough beats for
  a stable value. It is neurokit2's `hrv_time` RMSSD of the R-peaks inside each window, computed for all
  windows at once with cumulative sums (calling `hrv_time` 300 times for a 5-minute recording would take a
  second); RR intervals outside 0.27-2 s (220-30 bpm) are left out.
- **eda_tonic** and **eda_phasic** (microsiemens): the cleaned EDA (`eda_clean`, a 3 Hz low-pass) split
  by `eda_phasic` into the slow skin conductance level (below 0.05 Hz) and the phasic part that holds the
  skin conductance responses. SCRs follow arousing events after 1-3 s and grow more frequent and larger
  with arousal; the level drifts with slower changes of arousal.

All features are computed over the whole recording, so a frame's value may depend on samples seconds
after it (filters run forwards and backwards, windows are centred): fine for a privileged modality that
the teacher sees whole, and the physiological latencies (heart rate ~2 s, SCRs 1-3 s behind the event)
are left for the model to learn.
"""

from __future__ import annotations

import warnings

import numpy as np

from pkd_jax.data.physio import PhysioError, PhysioRecording

PHYSIO_FEATURES = ("heart_rate", "hrv_rmssd", "eda_tonic", "eda_phasic")
HRV_WINDOW_S = 10.0
HRV_STEP_S = 1.0
RR_RANGE_S = (0.27, 2.0)  # plausible beat-to-beat intervals (220 to 30 bpm)
MIN_BEATS = 3  # two RR intervals: one successive difference
RATE_BEATS = 4  # neurokit2's interpolated rate needs more than 3 R-peaks; below, the median RR's rate


def _frame_means(values: np.ndarray, sample_rate: float, num_frames: int, fps: float) -> np.ndarray:
    """Mean of the samples inside each frame; a frame without samples takes the neighbours' value."""
    frame = np.floor(np.arange(len(values)) * (fps / sample_rate) + 1e-9).astype(np.int64)
    keep = frame < num_frames
    sums = np.bincount(frame[keep], weights=values[keep], minlength=num_frames)
    counts = np.bincount(frame[keep], minlength=num_frames)
    means = np.divide(sums, counts, out=np.zeros(num_frames), where=counts > 0)
    if not counts.all():
        known = np.flatnonzero(counts)
        means = np.interp(np.arange(num_frames), known, means[known])
    return means


def r_peaks(ecg: np.ndarray, sample_rate: float, source: str = "ECG") -> np.ndarray:
    """Sample indices of the R-peaks, found by neurokit2 (cleaning, detection, artifact correction).

    Raises:
      PhysioError: naming `source`, when fewer than 3 beats are found or their rate is implausible.
    """
    import neurokit2 as nk

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # neurokit2 warns about short signals; the checks below decide
        cleaned = nk.ecg_clean(ecg, sampling_rate=sample_rate)
        _, info = nk.ecg_peaks(cleaned, sampling_rate=sample_rate, correct_artifacts=True)
    peaks = np.unique(np.asarray(info["ECG_R_Peaks"], np.int64))
    if len(peaks) < MIN_BEATS:
        raise PhysioError(f"{source}: {len(peaks)} heartbeats found in the ECG; at least {MIN_BEATS} needed")
    median_rr = float(np.median(np.diff(peaks))) / sample_rate
    if not RR_RANGE_S[0] <= median_rr <= RR_RANGE_S[1]:
        raise PhysioError(
            f"{source}: implausible heart rate of {60 / median_rr:.0f} bpm from the ECG's R-peaks "
            "(is the ECG column an ECG?)"
        )
    return peaks


def rolling_rmssd(
    beat_times: np.ndarray, centres: np.ndarray, window_s: float = HRV_WINDOW_S, min_diffs: int = 2
) -> np.ndarray:
    """RMSSD in ms of the beats inside [c - window / 2, c + window / 2) for each centre c; NaN with fewer
    than `min_diffs` successive differences. Equals neurokit2's `hrv_time(...)["HRV_RMSSD"]` on those
    beats."""
    rr = np.diff(beat_times)
    valid_rr = (rr >= RR_RANGE_S[0]) & (rr <= RR_RANGE_S[1])
    diffs = np.diff(rr) * 1000.0  # difference j uses beats j, j+1 and j+2
    valid = valid_rr[1:] & valid_rr[:-1]
    squares = np.concatenate([[0.0], np.cumsum(np.where(valid, diffs**2, 0.0))])
    counts = np.concatenate([[0], np.cumsum(valid)])
    first = np.searchsorted(beat_times, centres - window_s / 2)
    stop = np.searchsorted(beat_times, centres + window_s / 2)
    last_diff = np.clip(stop - 2, first, len(diffs))  # differences [first, stop - 2) lie inside
    n = counts[last_diff] - counts[first]
    total = squares[last_diff] - squares[first]
    return np.where(n >= min_diffs, np.sqrt(total / np.maximum(n, 1)), np.nan)


def physio_features(recording: PhysioRecording, num_frames: int, fps: float = 25.0) -> np.ndarray:
    """float32 [num_frames, 4]: `PHYSIO_FEATURES` per video frame, in bpm, ms, microsiemens, microsiemens.

    Frames past the recording's end (a recording shorter than the video within the tolerance) repeat the
    last frame's values.

    Raises:
      PhysioError: naming the file, when the ECG yields no plausible heartbeats.
    """
    import neurokit2 as nk

    rate = recording.sample_rate
    n = len(recording.ecg)
    peaks = r_peaks(recording.ecg, rate, recording.source or "ECG")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if len(peaks) >= RATE_BEATS:
            heart_rate = np.asarray(nk.ecg_rate(peaks, sampling_rate=rate, desired_length=n), np.float64)
        else:  # a recording of a few seconds
            heart_rate = np.full(n, 60.0 * rate / float(np.median(np.diff(peaks))))
        eda = nk.eda_clean(recording.eda, sampling_rate=rate)
        parts = nk.eda_phasic(eda, sampling_rate=rate, method="highpass")
    tonic = parts["EDA_Tonic"].to_numpy(np.float64)
    phasic = parts["EDA_Phasic"].to_numpy(np.float64)
    centres = np.arange(HRV_STEP_S / 2, max(n / rate, HRV_STEP_S), HRV_STEP_S)
    rmssd = rolling_rmssd(peaks / rate, centres)
    known = np.isfinite(rmssd)
    if not known.any():  # too few beats for a window: one value for the whole recording
        centres = centres[:1]
        rmssd = rolling_rmssd(peaks / rate, centres, window_s=np.inf, min_diffs=1)
        known = np.isfinite(rmssd)
        if not known.any():
            raise PhysioError(f"{recording.source}: no two successive plausible RR intervals in the ECG")
    frame_centres = (np.arange(num_frames) + 0.5) / fps
    columns = [
        _frame_means(heart_rate, rate, num_frames, fps),
        np.interp(frame_centres, centres[known], rmssd[known]),
        _frame_means(tonic, rate, num_frames, fps),
        _frame_means(phasic, rate, num_frames, fps),
    ]
    features = np.stack(columns, axis=1).astype(np.float32)
    if not np.isfinite(features).all():
        raise PhysioError(f"{recording.source}: non-finite physiological features")
    return features
