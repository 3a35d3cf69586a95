"""Paired differences over seeds against a hand-computed t-interval, and the one-seed case."""

import math

import pytest

from pkd_jax.experiments import stats

T_975_DF4 = 2.776445  # two-sided 95% Student-t quantile with 4 degrees of freedom (tables)


def test_five_seeds_match_the_hand_computed_interval():
    a = [0.50, 0.60, 0.55, 0.70, 0.65]
    b = [0.45, 0.58, 0.50, 0.62, 0.60]
    # Differences 0.05, 0.02, 0.05, 0.08, 0.05: mean 0.05, squared deviations sum to 0.0018.
    std = math.sqrt(0.0018 / 4)
    half = T_975_DF4 * std / math.sqrt(5)
    d = stats.paired_difference(a, b)
    assert d["n"] == 5 and d["confidence"] == 0.95
    assert d["mean"] == pytest.approx(0.05)
    assert d["std"] == pytest.approx(std)
    assert d["ci_low"] == pytest.approx(0.05 - half, abs=1e-6)
    assert d["ci_high"] == pytest.approx(0.05 + half, abs=1e-6)
    assert d["excludes_zero"] is True
    assert d["differences"] == pytest.approx([0.05, 0.02, 0.05, 0.08, 0.05])
    assert stats.describe(d) == "+0.050 [95% CI +0.024, +0.076], excludes 0"


def test_an_interval_across_zero_includes_it_and_the_sign_is_a_minus_b():
    d = stats.paired_difference([0.1, 0.2, 0.3], [0.15, 0.1, 0.4])  # differences -0.05, +0.1, -0.1
    assert d["mean"] == pytest.approx(-0.05 / 3)
    assert d["ci_low"] < 0 < d["ci_high"] and d["excludes_zero"] is False
    assert stats.describe(d).endswith("includes 0") and stats.describe(d).startswith("-0.017 [95% CI")
    wider = stats.paired_difference([0.1, 0.2, 0.3], [0.15, 0.1, 0.4], confidence=0.99)
    assert wider["ci_high"] - wider["ci_low"] > d["ci_high"] - d["ci_low"]
    assert "[99% CI" in stats.describe(wider)


def test_fewer_than_two_seeds_have_no_interval():
    one = stats.paired_difference([0.4], [0.3])
    assert one["n"] == 1 and one["mean"] == pytest.approx(0.1)
    assert one["std"] is None and one["ci_low"] is None and one["ci_high"] is None
    assert one["excludes_zero"] is False
    assert stats.describe(one) == "+0.100 (one seed: an anecdote, no interval)"
    none = stats.paired_difference([], [])
    assert none["n"] == 0 and none["mean"] is None and none["excludes_zero"] is False
    assert stats.describe(none) == "n/a (no pairs)"


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="differ in length"):
        stats.paired_difference([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="confidence"):
        stats.paired_difference([0.1, 0.2], [0.1, 0.3], confidence=1.0)
