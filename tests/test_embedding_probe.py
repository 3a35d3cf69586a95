"""The linear probes' arithmetic (`pkd_jax.experiments.embedding_probe`), on arrays with known answers."""

import numpy as np
import pytest

from pkd_jax.experiments import embedding_probe as probe


def test_ridge_recovers_a_linear_map_and_r_squared_scores_it():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 4))
    w = rng.normal(size=(4, 3))
    y = x @ w + 2.0
    fit = probe.ridge(x, y, lam=1e-6)
    np.testing.assert_allclose(fit[:4], w, atol=1e-3)
    np.testing.assert_allclose(fit[4], 2.0, atol=1e-3)
    assert probe.r_squared(probe.apply_ridge(fit, x), y) == pytest.approx(1.0, abs=1e-6)
    assert probe.r_squared(np.broadcast_to(y.mean(0), y.shape), y) == pytest.approx(0.0, abs=1e-9)
    # Half the target's variance is noise no map of x holds.
    noisy = y + rng.normal(size=y.shape) * np.std(x @ w, axis=0)
    assert probe.r_squared(probe.apply_ridge(probe.ridge(x, noisy), x), noisy) == pytest.approx(0.5, abs=0.05)


def test_mean_cosine_of_rows_and_of_a_constant_direction():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert probe.mean_cosine(a, a) == pytest.approx(1.0)
    assert probe.mean_cosine(a, np.array([1.0, 0.0])) == pytest.approx(0.5)
    # Embeddings near a common mean: a constant vector already reaches a high cosine.
    rng = np.random.default_rng(1)
    emb = 3.0 + rng.normal(size=(1000, 8))
    assert probe.mean_cosine(emb, emb.mean(0)) > 0.9


def test_probes_need_a_finished_runner_workdir(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"results\.json does not exist"):
        probe.run_probes(tmp_path, seeds=1)
