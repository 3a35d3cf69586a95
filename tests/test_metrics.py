"""Tests for pkd_jax.metrics (host-side CCC, post-processing, per-video evaluation)."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from pkd_jax.metrics import PostProcessing, StreamingCCC, ccc_np, evaluate_videos


def _ref_ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Direct float64 two-pass CCC of 1-D arrays, written independently of the library."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    mx, my = x.mean(), y.mean()
    cov = np.mean((x - mx) * (y - my))
    return float(2 * cov / (x.var() + y.var() + (mx - my) ** 2))


def _correlated(rng: np.random.Generator, shape: tuple[int, ...], offset: float = 0.0):
    # Both sequences sit on the same offset so CCC stays O(1) and precision loss would show.
    x = rng.normal(size=shape)
    y = 0.6 * x + 0.3 * rng.normal(size=shape) + 0.2
    return x + offset, y + offset


def _uneven_chunks(n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    cuts = np.sort(rng.choice(np.arange(1, n), size=6, replace=False))
    bounds = [0, *cuts.tolist(), n]
    return list(itertools.pairwise(bounds))


@pytest.mark.parametrize("offset", [0.0, 1e4, 1e6])
def test_streaming_equals_one_shot_masked(offset: float) -> None:
    rng = np.random.default_rng(0)
    t, k = 1000, 2
    x, y = _correlated(rng, (t, k), offset)
    mask = rng.random(t) > 0.3
    acc = StreamingCCC()
    for a, b in _uneven_chunks(t, rng):
        acc.update(x[a:b], y[a:b], mask[a:b])
    got = acc.result()
    assert got.dtype == np.float64 and got.shape == (k,)
    want = [_ref_ccc(x[mask, j], y[mask, j]) for j in range(k)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(acc.count, [mask.sum()] * k)
    for j in range(k):
        assert abs(ccc_np(x[:, j], y[:, j], mask) - want[j]) < 1e-10


def test_streaming_batched_leading_dims_and_full_mask() -> None:
    # [B, T, K] inputs with a per-target mask: each target sees its own frame subset.
    rng = np.random.default_rng(1)
    x, y = _correlated(rng, (3, 50, 2), offset=1e4)
    mask = rng.random((3, 50, 2)) > 0.5
    acc = StreamingCCC()
    acc.update(x[:2], y[:2], mask[:2])
    acc.update(x[2:], y[2:], mask[2:])
    want = [_ref_ccc(x[..., j][mask[..., j]], y[..., j][mask[..., j]]) for j in range(2)]
    np.testing.assert_allclose(acc.result(), want, rtol=0, atol=1e-10)


def test_streaming_one_dim_input_is_single_target() -> None:
    rng = np.random.default_rng(2)
    x, y = _correlated(rng, (200,))
    acc = StreamingCCC()
    acc.update(x[:70], y[:70])
    acc.update(x[70:], y[70:])
    assert acc.num_targets == 1
    np.testing.assert_allclose(acc.result(), [_ref_ccc(x, y)], rtol=0, atol=1e-10)


def test_target_count_mismatch_raises() -> None:
    acc = StreamingCCC()
    acc.update(np.zeros((4, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="targets"):
        acc.update(np.zeros((4, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="shape"):
        acc.update(np.zeros((4, 2)), np.zeros((5, 2)))


def test_perfect_and_inverse_agreement() -> None:
    x = np.random.default_rng(3).normal(size=500) + 5.0
    assert ccc_np(x, x) == pytest.approx(1.0, abs=1e-12)
    # -x has a different mean from x, so CCC(x, -x) is only -1 for zero-mean x.
    xc = x - x.mean()
    assert ccc_np(xc, -xc) == pytest.approx(-1.0, abs=1e-12)
    acc = StreamingCCC()
    acc.update(np.stack([x, xc], -1), np.stack([x, -xc], -1))
    np.testing.assert_allclose(acc.result(), [1.0, -1.0], atol=1e-12)


def test_constant_prediction_is_zero_and_finite() -> None:
    y = np.random.default_rng(4).normal(size=300)
    for c in (0.0, 0.1, 3.7):
        pred = np.full_like(y, c)
        assert abs(ccc_np(pred, y)) < 1e-14
        acc = StreamingCCC()
        acc.update(pred[:100], y[:100])
        acc.update(pred[100:], y[100:])
        r = acc.result()
        assert np.all(np.isfinite(r)) and abs(r[0]) < 1e-14


def test_degenerate_cases_return_zero_not_nan() -> None:
    # No frames at all.
    assert np.array_equal(StreamingCCC(2).result(), [0.0, 0.0])
    assert StreamingCCC().result().shape == (0,)
    acc = StreamingCCC()
    acc.update(np.ones((5, 2)), np.ones((5, 2)), np.zeros(5, bool))
    assert np.array_equal(acc.result(), [0.0, 0.0])
    assert ccc_np(np.ones(3), np.ones(3), np.zeros(3)) == 0.0
    # Both constant and equal (zero denominator, up to rounding of the mean of 0.1s).
    acc = StreamingCCC()
    acc.update(np.full((7, 2), 0.1), np.full((7, 2), 0.1))
    assert np.array_equal(acc.result(), [0.0, 0.0])
    assert ccc_np(np.full(7, 0.1), np.full(7, 0.1)) == 0.0


def test_merge_equals_single_accumulator() -> None:
    rng = np.random.default_rng(5)
    x, y = _correlated(rng, (900, 2), offset=1e4)
    mask = rng.random(900) > 0.2
    single = StreamingCCC()
    single.update(x, y, mask)
    # Parts with very different means, as separate videos would have.
    x[300:600] += 50.0
    y[300:600] += 50.0
    single_shifted = StreamingCCC()
    single_shifted.update(x, y, mask)
    parts = [StreamingCCC() for _ in range(3)]
    for p, (a, b) in zip(parts, [(0, 300), (300, 600), (600, 900)], strict=True):
        p.update(x[a:b], y[a:b], mask[a:b])
    merged = StreamingCCC().merge(parts[0]).merge(parts[1]).merge(parts[2])
    np.testing.assert_allclose(merged.result(), single_shifted.result(), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(merged.count, single_shifted.count)
    assert not np.allclose(single.result(), single_shifted.result())  # the shift mattered
    # Merging an empty accumulator is a no-op; merge order does not matter.
    before = merged.result()
    merged.merge(StreamingCCC())
    np.testing.assert_array_equal(merged.result(), before)
    rev = StreamingCCC().merge(parts[2]).merge(parts[0]).merge(parts[1])
    np.testing.assert_allclose(rev.result(), before, rtol=0, atol=1e-12)
    with pytest.raises(ValueError):
        merged.merge(StreamingCCC(3))


@pytest.mark.parametrize("garbage", [1e6, np.nan, np.inf])
def test_masked_garbage_changes_nothing(garbage: float) -> None:
    rng = np.random.default_rng(6)
    x, y = _correlated(rng, (400, 2))
    mask = rng.random(400) > 0.4
    clean = StreamingCCC()
    clean.update(x[:150], y[:150], mask[:150])
    clean.update(x[150:], y[150:], mask[150:])
    xg, yg = x.copy(), y.copy()
    xg[~mask] = garbage
    yg[~mask] = -garbage
    dirty = StreamingCCC()
    dirty.update(xg[:150], yg[:150], mask[:150])
    dirty.update(xg[150:], yg[150:], mask[150:].astype(np.int32))  # 0/1 mask works too
    np.testing.assert_array_equal(dirty.result(), clean.result())
    assert ccc_np(xg[:, 0], yg[:, 0], mask) == ccc_np(x[:, 0], y[:, 0], mask)


def test_unmasked_nan_propagates() -> None:
    # NaN is only tolerated where masked; silently dropping it elsewhere would hide bugs.
    acc = StreamingCCC()
    acc.update(np.array([1.0, np.nan, 3.0]), np.array([1.0, 2.0, 3.0]))
    assert np.isnan(acc.result()[0])


def test_shift_moves_spike_by_exactly_shift_frames() -> None:
    x = np.zeros(100)
    x[10] = 1.0
    out = PostProcessing(shift_frames=7).apply(x)
    assert out.shape == x.shape
    assert np.flatnonzero(out).tolist() == [17]
    # Start is padded with the first value and the tail is dropped.
    ramp = np.arange(10.0)
    np.testing.assert_array_equal(PostProcessing(shift_frames=3).apply(ramp), [0, 0, 0, 0, 1, 2, 3, 4, 5, 6])
    # Shift longer than the sequence: everything becomes the first value.
    np.testing.assert_array_equal(PostProcessing(shift_frames=20).apply(ramp + 2), np.full(10, 2))


def test_smoothing_constant_is_noop_including_edges() -> None:
    x = np.full((50, 2), 0.37)
    x[:, 1] = -2.0
    out = PostProcessing(smooth_frames=121).apply(x)  # window longer than the sequence
    np.testing.assert_allclose(out, x, rtol=0, atol=1e-14)
    out = PostProcessing(smooth_frames=9).apply(x)
    np.testing.assert_allclose(out, x, rtol=0, atol=1e-14)


def test_moving_average_of_ramp() -> None:
    x = 2.0 * np.arange(40.0) - 3.0
    w = 7
    out = PostProcessing(smooth_frames=w).apply(x)
    half = w // 2
    np.testing.assert_allclose(out[half:-half], x[half:-half], rtol=0, atol=1e-12)
    # Edges average only the frames inside the window: frame 0 sees frames 0..3.
    assert out[0] == pytest.approx(x[:4].mean())
    assert out[-1] == pytest.approx(x[-4:].mean())


def test_postprocessing_order_scale_shift_smooth() -> None:
    x = np.zeros(30)
    x[5] = 1.0
    out = PostProcessing(scale=2.0, shift_frames=4, smooth_frames=3).apply(x)
    want = np.zeros(30)
    want[8:11] = 2.0 / 3.0  # spike x2, moved to frame 9, spread over 8..10
    np.testing.assert_allclose(out, want, atol=1e-15)


def test_postprocessing_labels_and_validation() -> None:
    assert PostProcessing().label == "raw"
    assert PostProcessing().is_identity
    rc = PostProcessing.released_code()
    assert (rc.scale, rc.shift_frames, rc.smooth_frames) == (1.45, 60, 121)
    assert rc.label == "post-processed (x1.45, shift 60, MA 121)"
    assert PostProcessing(scale=2.0).label == "post-processed (x2)"
    assert PostProcessing(smooth_frames=5).label == "post-processed (MA 5)"
    with pytest.raises(ValueError):
        PostProcessing(smooth_frames=4)
    with pytest.raises(ValueError):
        PostProcessing(shift_frames=-1)
    with pytest.raises(AttributeError):
        rc.scale = 2.0  # type: ignore[misc]


def _videos(rng: np.random.Generator, lengths: dict[str, int]):
    preds, labels = {}, {}
    for vid, t in lengths.items():
        p, y = _correlated(rng, (t, 2))
        preds[vid], labels[vid] = p, y
    return preds, labels


def test_evaluate_videos_structure_and_values() -> None:
    rng = np.random.default_rng(7)
    preds, labels = _videos(rng, {"dev_1": 120, "dev_2": 80, "dev_3": 200})
    masks = {"dev_2": rng.random(80) > 0.3}
    out = evaluate_videos(preds, labels, masks)
    json.dumps(out)  # JSON-serialisable
    assert out["postprocessing"] == "raw"
    assert list(out["per_video"]) == ["dev_1", "dev_2", "dev_3"]
    for name, j in (("valence", 0), ("arousal", 1)):
        vals = [out["per_video"][v][name] for v in preds]
        assert all(type(v) is float for v in vals)
        assert out["mean_over_videos"][name] == pytest.approx(np.mean(vals), abs=1e-15)
        m2 = masks["dev_2"]
        assert out["per_video"]["dev_2"][name] == pytest.approx(
            _ref_ccc(preds["dev_2"][m2, j], labels["dev_2"][m2, j]), abs=1e-10
        )
        cat_p = np.concatenate([preds["dev_1"][:, j], preds["dev_2"][m2, j], preds["dev_3"][:, j]])
        cat_y = np.concatenate([labels["dev_1"][:, j], labels["dev_2"][m2, j], labels["dev_3"][:, j]])
        assert out["concatenated"][name] == pytest.approx(_ref_ccc(cat_p, cat_y), abs=1e-10)


def test_evaluate_videos_with_postprocessing() -> None:
    rng = np.random.default_rng(8)
    preds, labels = _videos(rng, {"a": 300, "b": 250})
    post = PostProcessing(scale=1.45, shift_frames=5, smooth_frames=11)
    out = evaluate_videos(preds, labels, post=post)
    assert out["postprocessing"] == post.label != "raw"
    pp = post.apply(preds["a"])
    assert out["per_video"]["a"]["arousal"] == pytest.approx(_ref_ccc(pp[:, 1], labels["a"][:, 1]), abs=1e-10)
    raw = evaluate_videos(preds, labels)
    assert raw["per_video"]["a"]["arousal"] != out["per_video"]["a"]["arousal"]


def test_evaluate_videos_single_target_names() -> None:
    rng = np.random.default_rng(9)
    p, y = _correlated(rng, (60,))
    out = evaluate_videos({"v": p}, {"v": y}, target_names=("arousal",))
    assert out["per_video"]["v"]["arousal"] == pytest.approx(_ref_ccc(p, y), abs=1e-10)


def test_evaluate_videos_errors_name_video() -> None:
    rng = np.random.default_rng(10)
    preds, labels = _videos(rng, {"dev_1": 50, "dev_2": 60})
    with pytest.raises(ValueError, match="dev_2"):
        evaluate_videos(preds, {"dev_1": labels["dev_1"]})
    with pytest.raises(ValueError, match="dev_9"):
        evaluate_videos(preds, {**labels, "dev_9": labels["dev_1"]})
    bad = {**labels, "dev_2": labels["dev_2"][:-1]}
    with pytest.raises(ValueError, match=r"dev_2.*60.*59"):
        evaluate_videos(preds, bad)
    with pytest.raises(ValueError, match="dev_1"):
        evaluate_videos({**preds, "dev_1": preds["dev_1"][:, :1]}, labels)
    with pytest.raises(ValueError, match="dev_1"):
        evaluate_videos(preds, labels, masks={"dev_1": np.ones(49, bool)})
    with pytest.raises(ValueError, match="dev_7"):
        evaluate_videos(preds, labels, masks={"dev_7": np.ones(50, bool)})


def test_metrics_does_not_import_flax_or_jax() -> None:
    code = (
        "import sys, pkd_jax.metrics; "
        "bad = [m for m in ('flax', 'jax') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_result_values_are_python_floats_and_finite() -> None:
    out = evaluate_videos({"v": np.zeros((10, 2))}, {"v": np.ones((10, 2))})
    for name in ("valence", "arousal"):
        assert out["per_video"]["v"][name] == 0.0
        assert math.isfinite(out["concatenated"][name])
