"""Reader of a recording's physiological signals (ECG and EDA), validated and placed on the video's timeline.

The one layout read, beside `recordings_video/` in a RECOLA-layout corpus:

    recordings_physio/<id>.csv     header `time;ECG;EDA` (`;` or `,` separated, names in any case, further
                                   columns ignored), then one row per sample at a constant rate: `time` in
                                   seconds from the start of the recording, ECG in mV, EDA in microsiemens

Every problem is a `PhysioError` whose message names the file: a missing file or column, a non-numeric
value, a sampling rate other than the expected one (more than 1% off) or an irregular time column, a
recording that covers less of the video than its length minus the tolerance, a run of missing samples
(NaN or inf) longer than `max_gap_s` (or at the very start or end beyond it), a channel without a finite
value or a flat one. Shorter runs of missing samples are interpolated linearly and longer recordings are
trimmed to the video, each noted in `PhysioRecording.warnings`.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

COLUMNS = ("time", "ecg", "eda")
RATE_TOLERANCE = 0.01  # relative difference allowed between the file's and the expected sampling rate
STEP_TOLERANCE = 0.5  # a time step outside (1 -+ this) x the median step is a jump or a gap
_CHANNELS = {"ecg": "ECG", "eda": "EDA"}


class PhysioError(ValueError):
    """A missing, malformed or unusable physiological recording; the message names the file."""


@dataclasses.dataclass
class PhysioRecording:
    """ECG (mV) and EDA (microsiemens) samples k / sample_rate seconds after the recording's start.

    Attributes:
      ecg: float64 [N].
      eda: float64 [N].
      sample_rate: Samples per second.
      warnings: What was repaired (interpolated gaps, trimmed length), each naming the file.
      source: The file read.
    """

    ecg: np.ndarray
    eda: np.ndarray
    sample_rate: float
    warnings: list[str] = dataclasses.field(default_factory=list)
    source: str = ""

    @property
    def duration_s(self) -> float:
        return len(self.ecg) / self.sample_rate


def _header(path: Path, line: str) -> tuple[str, dict[str, int]]:
    """The separator and the column index of each of `COLUMNS`."""
    separator = ";" if ";" in line else ","
    names = [name.strip().strip("\"'").strip().lower() for name in line.split(separator)]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise PhysioError(
            f"{path}: columns {missing} missing from the header {line.strip()!r}; expected 'time;ECG;EDA'"
        )
    return separator, {c: names.index(c) for c in COLUMNS}


def _parse_slowly(path: Path, lines: list[str], separator: str, width: int) -> np.ndarray:
    """Row by row, to name the first bad row; empty fields are missing samples (NaN)."""
    rows = []
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(separator)]
        if len(fields) != width:
            raise PhysioError(f"{path}:{line_no}: expected {width} fields, got {len(fields)} in {line!r}")
        try:
            rows.append([float(f) if f else math.nan for f in fields])
        except ValueError:
            bad = next(f for f in fields if f and not _is_float(f))
            raise PhysioError(f"{path}:{line_no}: non-numeric value {bad!r}") from None
    return np.asarray(rows, np.float64).reshape(-1, width)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time, ecg, eda) as float64 arrays, NaN where a value is missing."""
    if not path.is_file():
        raise PhysioError(f"{path}: physiological recording missing")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise PhysioError(f"{path}: not UTF-8 text ({e})") from e
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise PhysioError(f"{path}: empty file, or no header line 'time;ECG;EDA' first")
    separator, index = _header(path, lines[0])
    width = len(lines[0].split(separator))
    if sum(1 for line in lines[1:] if line.strip()) < 2:
        raise PhysioError(f"{path}: fewer than 2 data rows; a recording needs at least 2")
    try:  # numpy's C parser; its errors lack the file, so the slow path finds and names the bad row
        table = np.loadtxt(lines[1:], delimiter=separator, ndmin=2, dtype=np.float64)
        if table.size and table.shape[1] != width:
            raise ValueError("field count")
    except ValueError:
        table = _parse_slowly(path, lines, separator, width)
    return table[:, index["time"]], table[:, index["ecg"]], table[:, index["eda"]]


def _check_time(path: Path, time: np.ndarray, sample_rate: float, fps: float) -> None:
    """The time column: finite, starting at 0, at `sample_rate` within 1%, without jumps or gaps."""
    bad = np.flatnonzero(~np.isfinite(time))
    if bad.size:
        raise PhysioError(f"{path}:{bad[0] + 2}: time is not a finite number")
    steps = np.diff(time)
    median = float(np.median(steps))
    if median <= 0:
        raise PhysioError(f"{path}: the time column does not increase (median step {median:g} s)")
    rate = 1.0 / median
    expected = f"expected {sample_rate:g} Hz (physio_sample_rate)"
    if abs(rate - sample_rate) > RATE_TOLERANCE * sample_rate:
        raise PhysioError(
            f"{path}: sampled at {rate:.6g} Hz (median time step {median:.6g} s), {expected}; set "
            "physio_sample_rate to the corpus's rate"
        )
    irregular = np.flatnonzero(np.abs(steps - median) > STEP_TOLERANCE * median)
    if irregular.size:
        i = int(irregular[0])
        raise PhysioError(
            f"{path}:{i + 3}: irregular time column: a step of {steps[i]:.6g} s at {time[i]:.6g} s where the "
            f"median step is {median:.6g} s ({rate:.6g} Hz, {expected}); {irregular.size} irregular steps"
        )
    overall = (len(time) - 1) / (time[-1] - time[0])
    if abs(overall - sample_rate) > RATE_TOLERANCE * sample_rate:
        raise PhysioError(
            f"{path}: {len(time)} samples over {time[-1] - time[0]:.6g} s are {overall:.6g} Hz, {expected}: "
            "the time column drifts or has gaps"
        )
    if abs(time[0]) > 1.0 / fps:
        raise PhysioError(
            f"{path}: time starts at {time[0]:g} s; it must count seconds from the start of the recording"
        )


def _runs(missing: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True."""
    edges = np.diff(np.concatenate([[0], missing.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def _fill_gaps(
    path: Path, name: str, values: np.ndarray, time: np.ndarray, sample_rate: float, max_gap_s: float
) -> tuple[np.ndarray, str | None]:
    """`values` with runs of NaN/inf up to `max_gap_s` filled (linearly; held at the ends), and a warning."""
    missing = ~np.isfinite(values)
    if missing.all():
        raise PhysioError(f"{path}: the {name} column has no finite value")
    runs = _runs(missing)
    for start, stop in runs:
        seconds = (stop - start) / sample_rate
        if seconds > max_gap_s + 1e-9:
            where = "at the start" if start == 0 else "at the end" if stop == len(values) else "in the middle"
            raise PhysioError(
                f"{path}: {name} is missing (NaN/inf) from {time[start]:.3f} s to {time[stop - 1]:.3f} s "
                f"({seconds:.3g} s {where}), longer than physio_max_gap_s={max_gap_s:g} s"
            )
    filled = values.copy()
    if runs:
        known = np.flatnonzero(~missing)
        filled[missing] = np.interp(np.flatnonzero(missing), known, values[known])
    if np.ptp(filled) < 1e-9:
        raise PhysioError(f"{path}: {name} is flat (constant {filled[0]:g}): is the sensor disconnected?")
    if not runs:
        return filled, None
    at = ", ".join(f"{time[s]:.2f} s" for s, _ in runs[:5]) + (", ..." if len(runs) > 5 else "")
    warning = (
        f"{path}: {name}: {int(missing.sum())} missing samples (NaN/inf) in {len(runs)} "
        f"run{'s' if len(runs) > 1 else ''} of at most {max_gap_s:g} s interpolated, at {at}"
    )
    return filled, warning


def read_physio(
    path: str | Path,
    *,
    sample_rate: float,
    num_frames: int,
    fps: float = 25.0,
    max_gap_s: float = 1.0,
    tolerance_s: float = 1.0,
) -> PhysioRecording:
    """Reads, checks and repairs one recording, trimmed to the video's `num_frames / fps` seconds.

    Args:
      path: The CSV file (see the module docstring).
      sample_rate: The rate the file must have, in Hz.
      num_frames: Frames of the video the recording goes with.
      fps: Their rate.
      max_gap_s: Longest run of missing samples that is interpolated.
      tolerance_s: How much shorter than the video the recording may be (the streams are then cut to it).

    Returns:
      The samples on the uniform grid k / sample_rate (placed by their time stamps), at most as long as the
      video.

    Raises:
      PhysioError: naming the file and the problem (see the module docstring).
    """
    path = Path(path)
    time, ecg, eda = _parse(path)
    _check_time(path, time, sample_rate, fps)
    warnings = []
    channels = {}
    for key, values in (("ecg", ecg), ("eda", eda)):
        channels[key], warning = _fill_gaps(path, _CHANNELS[key], values, time, sample_rate, max_gap_s)
        if warning:
            warnings.append(warning)
    covered = float(time[-1]) + 1.0 / sample_rate
    video = num_frames / fps
    if covered < video - tolerance_s:
        raise PhysioError(
            f"{path}: the recording covers {covered:.2f} s, the video {video:.2f} s ({num_frames} frames at "
            f"{fps:g} fps): shorter by more than the tolerance of {tolerance_s:.3g} s (truncated?)"
        )
    if covered > video + 1.0 / fps:
        warnings.append(f"{path}: {covered:.2f} s long, trimmed to the video's {video:.2f} s")
    n = min(math.floor(covered * sample_rate + 0.5), round(video * sample_rate))
    grid = np.arange(n) / sample_rate
    ecg_out, eda_out = (np.interp(grid, time, channels[key]) for key in ("ecg", "eda"))
    return PhysioRecording(ecg_out, eda_out, float(sample_rate), warnings, str(path))
