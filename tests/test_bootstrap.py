"""The paired two-way bootstrap over seeds x recordings: effect vs noise, coverage, what recording variation
does to the interval, determinism, bad input, and its use in the paired table and its report section."""

import json
import math
import time

import numpy as np
import pytest

from pkd_jax.experiments import bootstrap, report_paired

T_975_DF9 = 2.262157  # two-sided 95% Student-t quantile with 9 degrees of freedom (tables)


def _crossed(rng, seeds, recordings, mean=0.0, seed_sd=1.0, recording_sd=1.0, residual_sd=1.0):
    """d[seed, recording] = mean + seed effect + recording effect + residual, all normal and independent."""
    return (
        mean
        + seed_sd * rng.normal(size=(seeds, 1))
        + recording_sd * rng.normal(size=(1, recordings))
        + residual_sd * rng.normal(size=(seeds, recordings))
    )


def test_a_clear_positive_effect_excludes_zero():
    d = _crossed(
        np.random.default_rng(0), 20, 9, mean=0.05, seed_sd=0.01, recording_sd=0.01, residual_sd=0.02
    )
    boot = bootstrap.two_way_bootstrap(d)
    assert boot["excludes_zero"] and 0 < boot["ci_low"] < boot["mean"] < boot["ci_high"]
    assert boot["mean"] == pytest.approx(d.mean()) and boot["mean"] == pytest.approx(0.05, abs=0.01)
    assert (boot["n_seeds"], boot["n_recordings"], boot["n_boot"]) == (20, 9, bootstrap.N_BOOT)
    assert boot["mde"] == pytest.approx(2.8016 * boot["se"], rel=1e-4)
    text = bootstrap.describe(boot)
    assert text.startswith(f"{boot['mean']:+.3f} [95% CI {boot['ci_low']:+.3f}, {boot['ci_high']:+.3f}]")
    assert text.endswith(
        f"excludes 0 (bootstrap over 20 seeds x 9 recordings); smallest detectable effect {boot['mde']:.3f}"
    )


def test_noise_of_mean_zero_is_covered_about_95_percent_of_the_time():
    # 12 seeds x 12 recordings, a residual twice the seed and recording effects: there the percentile
    # interval's narrowness with few units and the width from its thrice-counted residual about cancel
    # (the module's docstring says where they do not; 0.92 here with a residual the size of the effects).
    rng = np.random.default_rng(1)
    covered = []
    for i in range(200):
        boot = bootstrap.two_way_bootstrap(_crossed(rng, 12, 12, residual_sd=2.0), n_boot=1000, seed=i)
        covered.append(boot["ci_low"] <= 0.0 <= boot["ci_high"])
    assert 0.9 <= np.mean(covered) <= 0.99


def test_systematic_recording_differences_widen_the_interval_beyond_seeds_only():
    # Every seed sees the same recordings, so their effects cancel in the per-seed mean over recordings:
    # the t-interval over seeds is narrow, the bootstrap's redrawn recordings are not.
    d = _crossed(
        np.random.default_rng(2), 10, 8, mean=0.03, seed_sd=0.005, recording_sd=0.1, residual_sd=0.005
    )
    per_seed = d.mean(axis=1)
    # The seeds-only interval of stats.paired_difference by hand, which spares the test scipy's import.
    t_half = T_975_DF9 * per_seed.std(ddof=1) / math.sqrt(len(per_seed))
    assert per_seed.mean() - t_half > 0  # the seeds agree on the sign on these 8 recordings ...
    boot = bootstrap.two_way_bootstrap(d)
    assert boot["mean"] == pytest.approx(per_seed.mean())
    assert not boot["excludes_zero"]  # ... other recordings could reverse it
    assert boot["ci_high"] - boot["ci_low"] > 4 * 2 * t_half


def test_the_same_matrix_gives_the_same_interval_and_20_x_9_takes_well_under_a_second():
    d = _crossed(np.random.default_rng(3), 20, 9)
    start = time.perf_counter()
    first = bootstrap.two_way_bootstrap(d)
    assert time.perf_counter() - start < 1.0  # about 0.01 s on the 2-core CPU
    assert bootstrap.two_way_bootstrap(d.tolist()) == first
    other = bootstrap.two_way_bootstrap(d, seed=1)
    assert other["ci_low"] != first["ci_low"] and other["ci_low"] == pytest.approx(first["ci_low"], abs=0.05)


def test_one_seed_or_one_recording_has_no_interval():
    one_seed = bootstrap.two_way_bootstrap([[0.1, 0.2, 0.3]])
    assert one_seed["ci_low"] is None and one_seed["se"] is None and not one_seed["excludes_zero"]
    assert bootstrap.describe(one_seed) == "+0.200 (one seed: an anecdote, no interval)"
    one_recording = bootstrap.two_way_bootstrap([[0.1], [0.3]])
    assert one_recording["mde"] is None and one_recording["mean"] == pytest.approx(0.2)
    assert "one recording" in bootstrap.describe(one_recording)
    assert bootstrap.describe(None) == "n/a (no per-recording scores)"


@pytest.mark.parametrize(
    "d",
    [[], [[]], np.zeros((0, 3)), np.zeros((3, 0)), [0.1, 0.2], np.zeros((2, 2, 2)), [[0.1, 0.2], [0.3]]],
    ids=["empty", "no recordings", "no seeds", "no recordings 2", "1-D", "3-D", "ragged"],
)
def test_bad_shapes_are_refused(d):
    with pytest.raises(ValueError, match=r"matrix|no paired differences"):
        bootstrap.two_way_bootstrap(d)


def test_bad_values_and_parameters_are_refused():
    with pytest.raises(ValueError, match="finite"):
        bootstrap.two_way_bootstrap([[0.1, math.nan], [0.2, 0.3]])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap.two_way_bootstrap([[0.1, 0.2], [0.2, 0.3]], confidence=1.0)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap.two_way_bootstrap([[0.1, 0.2], [0.2, 0.3]], n_boot=1)
    with pytest.raises(ValueError, match="power"):
        bootstrap.minimum_detectable_effect(0.01, power=1.0)


def test_minimum_detectable_effect_is_2_80_standard_errors():
    # z_0.975 = 1.959964, z_0.8 = 0.841621, z_0.995 = 2.575829, z_0.9 = 1.281552 (tables)
    assert bootstrap.minimum_detectable_effect(0.01) == pytest.approx(0.028016, abs=1e-6)
    assert bootstrap.minimum_detectable_effect(0.01, alpha=0.01, power=0.9) == pytest.approx(
        0.038574, abs=1e-6
    )


def _eval(per_video: dict[str, dict[str, float]]) -> dict:
    """An `eval.json` of the loop's structure from per-recording CCC."""
    targets = next(iter(per_video.values()))
    mean = {t: float(np.mean([v[t] for v in per_video.values()])) for t in targets}
    return {"raw": {"per_video": per_video, "mean_over_videos": mean, "concatenated": mean}}


def test_paired_table_matches_recordings_by_id_and_drops_unscored_ones():
    rng = np.random.default_rng(4)
    recordings = [f"test_{i}" for i in range(6)]
    evals: dict[str, dict[int, dict]] = {"visual": {}, "student": {}}
    for seed in range(5):
        base = {r: {"valence": rng.uniform(0, 0.5), "arousal": rng.uniform(0, 0.5)} for r in recordings}
        evals["visual"][seed] = _eval(base)
        # The student's recordings in another order: matched by id, not by position.
        gained = {r: {t: v + 0.1 for t, v in base[r].items()} for r in reversed(recordings)}
        evals["student"][seed] = _eval(gained)
    evals["student"][5] = evals["visual"][5] = _eval({"test_0": {"valence": 0.1, "arousal": 0.1}})
    del evals["visual"][5]  # a seed only one method ran is not paired
    evals["student"][3]["raw"]["per_video"]["test_2"]["arousal"] = math.nan  # e.g. a constant prediction
    del evals["visual"][1]["raw"]["per_video"]["test_4"]  # a recording one method lacks on one seed
    row = report_paired.paired_table(evals)["student - visual"]
    assert row["seeds"] == [0, 1, 2, 3, 4] and row["scope"] == "mean_over_videos"
    valence, arousal = row["targets"]["valence"], row["targets"]["arousal"]
    assert (
        valence["n"] == 5 and "ci_low" in valence and "differences" in valence
    )  # the t-interval's keys stay
    assert valence["bootstrap"]["dropped_recordings"] == ["test_4"]
    assert arousal["bootstrap"]["dropped_recordings"] == ["test_2", "test_4"]
    assert arousal["bootstrap"]["recordings"] == ["test_0", "test_1", "test_3", "test_5"]
    assert (arousal["bootstrap"]["n_seeds"], arousal["bootstrap"]["n_recordings"]) == (5, 4)
    assert valence["bootstrap"]["mean"] == pytest.approx(0.1) and valence["bootstrap"]["excludes_zero"]
    json.loads(json.dumps(row, allow_nan=False))  # results.json stays strict JSON


def test_the_report_section_leads_with_the_bootstrap_and_keeps_the_t_interval():
    evals: dict[str, dict[int, dict]] = {"visual": {}, "student": {}}
    rng = np.random.default_rng(5)
    for seed in range(4):
        scores = {f"r{i}": {"arousal": rng.uniform(0, 0.5)} for i in range(3)}
        evals["visual"][seed] = _eval(scores)
        evals["student"][seed] = _eval({r: {"arousal": v["arousal"] + 0.2} for r, v in scores.items()})
    evals["student"][0]["raw"]["per_video"]["r1"]["arousal"] = math.nan
    paired = {"test": report_paired.paired_table(evals, scope="concatenated")}
    text = "\n".join(report_paired.markdown_section(paired, {"student": "S", "visual": "V"}, list(range(4))))
    headline, seeds_only = text.split("Seeds only (t-interval, recordings held fixed):")
    assert "resamples the seeds with replacement and, independently, the recordings" in headline
    assert "(bootstrap over 4 seeds x 2 recordings); smallest detectable effect" in headline
    assert "; 1 recording(s) dropped (no finite score) |" in headline
    assert "is of the mean over recordings of per-recording CCC" in headline  # the concatenated scope
    assert "| S − V | +0.200 [95% CI" in seeds_only and "bootstrap" not in seeds_only
