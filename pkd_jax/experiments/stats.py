"""Paired statistics over seeds: is a difference between two methods more than seed noise?

Two methods trained with the same seed share their parameter initialisation and their clip stream, so
their scores are paired: the per-seed difference removes what the seed does to both. Over n seeds the
mean difference gets a two-sided Student-t interval with n - 1 degrees of freedom; an interval that
excludes 0 says the seeds agree on the sign at that confidence. With fewer than two seeds there is no
spread to estimate, so there is no interval (see `paired_difference`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean of the paired differences `a[i] - b[i]` with its two-sided t-interval.

    Args:
      a, b: Scores of two methods, element i of both from the same seed.
      confidence: Coverage of the interval, in (0, 1).

    Returns:
      `{"mean", "std", "n", "confidence", "ci_low", "ci_high", "excludes_zero", "differences"}`: `std` is
      the sample standard deviation of the differences (ddof = 1, the one the t-interval uses) and the
      interval is `mean -/+ t_{(1 + confidence) / 2, n - 1} * std / sqrt(n)`. With n < 2, `std`, `ci_low`
      and `ci_high` are None (one pair has no spread; JSON-safe, unlike NaN) and `excludes_zero` is
      False; with n = 0 `mean` is None as well.

    Raises:
      ValueError: when `a` and `b` differ in length or `confidence` is outside (0, 1).
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    diffs = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    n = len(diffs)
    out: dict[str, Any] = {
        "mean": sum(diffs) / n if n else None,
        "std": None,
        "n": n,
        "confidence": confidence,
        "ci_low": None,
        "ci_high": None,
        "excludes_zero": False,
        "differences": diffs,
    }
    if n < 2:
        return out
    from scipy import stats  # lazily: only reports need it, and it is slow to import

    mean = out["mean"]
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    # Both ends on the same side of 0; a zero-width interval at exactly 0 does not exclude it.
    out.update(std=std, ci_low=low, ci_high=high, excludes_zero=bool(low > 0 or high < 0))
    return out


def describe(diff: dict[str, Any], unit: str = "seed") -> str:
    """`paired_difference` output in words: "+0.031 [95% CI +0.004, +0.058], excludes 0".

    With one pair: "+0.031 (one seed: an anecdote, no interval)"; with none: "n/a (no pairs)". `unit`
    names what a pair is in those two messages.
    """
    if diff["n"] == 0:
        return "n/a (no pairs)"
    if diff["n"] == 1:
        return f"{diff['mean']:+.3f} (one {unit}: an anecdote, no interval)"
    verdict = "excludes 0" if diff["excludes_zero"] else "includes 0"
    level = f"{100 * diff['confidence']:g}%"
    return f"{diff['mean']:+.3f} [{level} CI {diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}], {verdict}"
