"""Readers and writers for the RECOLA (AVEC 2016) gold-standard rating files.

Two forms circulate:

* ARFF, one file per dimension: ``ratings_gold_standard/{arousal,valence}/<id>.arff`` with
  attributes ``Instance_name string``, ``frameTime numeric``, ``GoldStandard numeric`` and one
  ``'<id>',<time>,<value>`` row per 40 ms.
* CSV, one file per recording: ``ratings_gold_standard/<id>.csv``, no header, ``;``-separated
  ``arousal;valence`` rows, one per 40 ms.

Readers raise ``ValueError`` naming the offending file on malformed content.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ARFF_ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("Instance_name", "string"),
    ("frameTime", "numeric"),
    ("GoldStandard", "numeric"),
)


def _read_text(path: Path) -> str:
    """Reads a text file, turning decoding failures into a ValueError that names the file."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from e


def _parse_float(token: str, path: Path, line_no: int) -> float:
    """Parses one numeric field; NaN/inf and ARFF's '?' count as malformed."""
    try:
        value = float(token)
    except ValueError:
        raise ValueError(f"{path}:{line_no}: non-numeric value {token!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{path}:{line_no}: non-finite value {token!r}")
    return value


def _split_attribute(line: str, path: Path, line_no: int) -> tuple[str, str]:
    """Splits an ``@attribute <name> <type>`` line; the name may be quoted."""
    rest = line[len("@attribute") :].strip()
    if rest[:1] in ("'", '"'):
        end = rest.find(rest[0], 1)
        if end < 0:
            raise ValueError(f"{path}:{line_no}: unterminated attribute name")
        name, kind = rest[1:end], rest[end + 1 :].strip()
    else:
        name, _, kind = rest.partition(" ")
        kind = kind.strip()
    if not name or not kind:
        raise ValueError(f"{path}:{line_no}: malformed attribute line {line!r}")
    return name, kind.split()[0].lower()


def read_arff_gold(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads a per-dimension RECOLA gold-standard ARFF file.

    Args:
      path: The ``.arff`` file.

    Returns:
      ``(times, values)``: float64 arrays of frame times in seconds and gold-standard values.

    Raises:
      ValueError: naming the file, on a missing attribute or ``@data`` section, a row with the
        wrong number of fields, a non-numeric or NaN value, or no data rows.
    """
    path = Path(path)
    attributes: list[tuple[str, str]] = []
    rows: list[tuple[int, str]] = []
    in_data = False
    for line_no, raw in enumerate(_read_text(path).splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        if in_data:
            rows.append((line_no, line))
            continue
        keyword = line.split(maxsplit=1)[0].lower()
        if keyword == "@attribute":
            attributes.append(_split_attribute(line, path, line_no))
        elif keyword == "@data":
            in_data = True
        elif keyword != "@relation":
            raise ValueError(f"{path}:{line_no}: unexpected header line {line!r}")
    if not in_data:
        raise ValueError(f"{path}: no @data section")
    # Attribute names are matched case-insensitively: files produced by different tools disagree
    # on capitalisation but never on meaning.
    index = {name.lower(): i for i, (name, _) in enumerate(attributes)}
    for name, _ in ARFF_ATTRIBUTES:
        if name.lower() not in index:
            raise ValueError(f"{path}: missing attribute {name!r}")
    time_col, value_col = index["frametime"], index["goldstandard"]
    if not rows:
        raise ValueError(f"{path}: no data rows")
    times = np.empty(len(rows))
    values = np.empty(len(rows))
    # Instance names are quoted with single quotes, so a csv reader handles embedded commas.
    reader = csv.reader(io.StringIO("\n".join(r for _, r in rows)), quotechar="'")
    for i, ((line_no, _), fields) in enumerate(zip(rows, reader, strict=True)):
        if len(fields) != len(attributes):
            raise ValueError(f"{path}:{line_no}: expected {len(attributes)} fields, got {len(fields)}")
        times[i] = _parse_float(fields[time_col].strip(), path, line_no)
        values[i] = _parse_float(fields[value_col].strip(), path, line_no)
    return times, values


def read_csv_gold(path: str | Path) -> np.ndarray:
    """Reads a headerless ``arousal;valence`` gold-standard CSV file.

    Args:
      path: The ``.csv`` file.

    Returns:
      A float64 array of shape ``[T, 2]`` with columns ``(arousal, valence)``.

    Raises:
      ValueError: naming the file, on a row without exactly two fields, a non-numeric or NaN
        value, or an empty file.
    """
    path = Path(path)
    out: list[tuple[float, float]] = []
    for line_no, raw in enumerate(_read_text(path).splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        fields = line.split(";")
        if len(fields) != 2:
            raise ValueError(f"{path}:{line_no}: expected 'arousal;valence', got {line!r}")
        arousal, valence = (_parse_float(f.strip(), path, line_no) for f in fields)
        out.append((arousal, valence))
    if not out:
        raise ValueError(f"{path}: no data rows")
    return np.asarray(out, dtype=np.float64)


def write_arff_gold(
    path: str | Path,
    instance_name: str,
    times: Sequence[float] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    relation: str = "GoldStandard",
) -> None:
    """Writes a per-dimension gold-standard ARFF file in the AVEC 2016 layout.

    Args:
      path: Destination ``.arff`` file (parent directories must exist).
      instance_name: Recording id written (quoted) in every row.
      times: Frame times in seconds, written with two decimals.
      values: Gold-standard values, one per time.
      relation: The ``@relation`` name.
    """
    times = np.asarray(times, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if times.shape != values.shape or times.ndim != 1:
        raise ValueError(f"times {times.shape} and values {values.shape} must be equal 1-D shapes")
    header = [f"@relation {relation}", ""]
    header += [f"@attribute {name} {kind}" for name, kind in ARFF_ATTRIBUTES]
    header += ["", "@data", ""]
    body = [f"'{instance_name}',{t:.2f},{v:.6f}" for t, v in zip(times, values, strict=True)]
    Path(path).write_text("\n".join(header + body) + "\n", encoding="utf-8")


def write_csv_gold(path: str | Path, arousal_valence: np.ndarray) -> None:
    """Writes a headerless ``arousal;valence`` gold-standard CSV file.

    Args:
      path: Destination ``.csv`` file.
      arousal_valence: Array of shape ``[T, 2]`` with columns ``(arousal, valence)``.
    """
    data = np.asarray(arousal_valence, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != 2:
        raise ValueError(f"expected shape [T, 2], got {data.shape}")
    Path(path).write_text("".join(f"{a:.6f};{v:.6f}\n" for a, v in data), encoding="utf-8")
