"""The negative control `teacher.shuffle`: the cached teacher's outputs moved off their frames."""

import numpy as np
import pytest

from pkd_jax.precompute.teacher_shuffle import derangement, shuffle_rows


def test_the_recording_shuffle_is_a_fixed_cyclic_derangement_cut_or_tiled_to_length():
    assert derangement(["c", "a", "b"]) == {"a": "b", "b": "c", "c": "a"}
    rows = {"a": np.arange(5), "b": np.arange(10, 13), "c": np.arange(20, 24)}
    out = shuffle_rows(rows, "recording", {})
    np.testing.assert_array_equal(out["a"], [10, 11, 12, 10, 11])  # b's, tiled, time-aligned
    np.testing.assert_array_equal(out["b"], [20, 21, 22])  # c's, cut
    np.testing.assert_array_equal(out["c"], [0, 1, 2, 3])  # a's, cut
    with pytest.raises(ValueError, match="at least 2 training recordings"):
        shuffle_rows({"a": rows["a"]}, "recording", {})


def test_the_time_shuffle_shifts_each_recording_by_half_its_frames():
    clip_starts = np.arange(7)[:, None] * np.ones((1, 3))  # [S, ...]: S = T - L + 1 starts of T = 10 frames
    track = np.arange(10)
    out = shuffle_rows({"v": clip_starts, "w": track}, "time", {"v": 10, "w": 10})
    np.testing.assert_array_equal(out["v"][:, 0], [5, 6, 0, 1, 2, 3, 4])  # start s gets s + 5, wrapped
    np.testing.assert_array_equal(out["w"], [5, 6, 7, 8, 9, 0, 1, 2, 3, 4])
    assert shuffle_rows({"w": track}, "none", {})["w"] is track
