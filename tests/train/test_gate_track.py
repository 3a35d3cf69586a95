"""The gate's windowed gamma against a float64 reference, its bounds, and the clip-context gamma."""

import numpy as np
import pytest

from pkd_jax import losses
from pkd_jax.precompute import gate_track


def reference_gamma(track, labels, mask, start, clip, window):
    """1 - CCC over the window of one clip start, written out the slow way in float64."""
    n = len(track)
    if window <= clip:
        lo, hi = start, min(start + clip, n)
    else:
        first = start + (clip - window) // 2
        lo, hi = max(first, 0), min(first + window, n)
    values = []
    for k in range(track.shape[1]):
        keep = [t for t in range(lo, hi) if mask[t] > 0]
        if not keep:
            values.append(1.0)
            continue
        x, y = np.float64(track[keep, k]), np.float64(labels[keep, k])
        cov = np.mean((x - x.mean()) * (y - y.mean()))
        ccc = 2 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2 + 1e-8)
        values.append(1.0 - ccc)
    return float(np.mean(values))


def smooth(rng, n, k):
    return np.cumsum(rng.normal(size=(n, k)), axis=0) / 10


@pytest.mark.parametrize("window", [1, 4, 7, 25, 60, 500])
def test_windowed_gamma_equals_a_float64_reference(window):
    rng = np.random.default_rng(0)
    n, clip, k = 90, 4, 2
    labels = smooth(rng, n, k)
    track = labels + 0.3 * smooth(rng, n, k) + 0.1 * rng.normal(size=(n, k))
    mask = np.ones(n)
    mask[10:30] = 0  # a stretch of missing labels (and NaN where they are missing, as in caches)
    labels[10:30] = np.nan
    lo, hi = gate_track.window_bounds(n, clip, window)
    got = gate_track.windowed_gamma(track, labels, mask, lo, hi)
    assert got.shape == (n - clip + 1,)
    want = [reference_gamma(track, labels, mask, s, clip, window) for s in range(n - clip + 1)]
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_window_bounds_are_centred_and_cut_at_the_video_ends():
    lo, hi = gate_track.window_bounds(100, 8, 24)
    assert (lo[0], hi[0]) == (0, 16)  # the first clip: 8 frames before it do not exist
    assert (lo[50], hi[50]) == (42, 66)  # clip [50, 58) in the middle of [42, 66)
    assert (lo[-1], hi[-1]) == (84, 100)  # the last clip [92, 100)
    lo, hi = gate_track.window_bounds(5, 8, 24)  # a video shorter than a clip: one start
    assert (lo.tolist(), hi.tolist()) == ([0], [5])


def test_window_of_the_clip_length_is_the_clip_context():
    rng = np.random.default_rng(1)
    n, clip = 40, 5
    labels = smooth(rng, n, 2).astype(np.float32)
    track = (labels + 0.2 * rng.normal(size=labels.shape)).astype(np.float32)
    mask = np.ones(n, np.float32)
    mask[3] = 0
    lo, hi = gate_track.window_bounds(n, clip, clip)
    windowed = gate_track.windowed_gamma(track, labels, mask, lo, hi)
    starts = np.arange(n - clip + 1)
    index = starts[:, None] + np.arange(clip)
    per_clip = np.asarray(losses.ccc_loss(track[index], labels[index], mask[index], per_sequence=True))
    np.testing.assert_allclose(windowed, per_clip, atol=2e-5)
    # The cached teacher's clip predictions give the same gamma as the loss's "clip" context.
    np.testing.assert_allclose(gate_track.clip_gamma(track[index], labels, mask), per_clip, atol=2e-5)


def test_expected_distilled_share_follows_each_rule():
    gammas = np.array([0.1, 0.3, 0.5, 1.2])
    assert gate_track.expected_distilled_share("paper", gammas, 0.3) == 0.5
    assert gate_track.expected_distilled_share("released_code", gammas, 0.3) == 0.75
    assert gate_track.expected_distilled_share("none", gammas, 0.3) == 1.0
