"""The learning-rate schedule of the optimizer (the strong setting's x0.8 every 2 epochs after epoch 5)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pkd_jax import defaults
from pkd_jax.train.state import make_optimizer, step_decay


def test_step_decay_staircase():
    schedule = step_decay(1e-3, 0.8, start_step=50, every_steps=20)
    steps = jnp.asarray([0, 49, 50, 69, 70, 90])
    expected = 1e-3 * 0.8 ** np.asarray([0, 0, 1, 1, 2, 3])
    np.testing.assert_allclose(schedule(steps), expected, rtol=1e-6)
    assert step_decay(1e-3, 1.0, start_step=50, every_steps=20) == 1e-3
    with pytest.raises(ValueError, match="every_steps"):
        step_decay(1e-3, 0.8, start_step=50, every_steps=0)


def _update_size(optim, step_count: int, steps_per_epoch: int) -> float:
    params = {"head": {"w": jnp.ones(3)}}
    tx = make_optimizer(optim, params, steps_per_epoch=steps_per_epoch)
    state = tx.init(params)
    grads = {"head": {"w": jnp.ones(3)}}
    for _ in range(step_count):
        updates, state = tx.update(grads, state, params)
    return float(jnp.abs(jax.tree.leaves(updates)[0][0]))


def test_affwild2_config_decays_adam_from_epoch_5():
    optim = defaults.affwild2(defaults.get_config("teacher", "affwild2")).optim
    # Adam's step on a constant gradient is the learning rate itself, so the update shows the schedule.
    assert _update_size(optim, 1, steps_per_epoch=10) == pytest.approx(1e-3, rel=1e-3)
    assert _update_size(optim, 51, steps_per_epoch=10) == pytest.approx(0.8e-3, rel=1e-3)  # step 50: epoch 5
    assert _update_size(optim, 71, steps_per_epoch=10) == pytest.approx(0.64e-3, rel=1e-3)
    weak = defaults.get_config("teacher", "recola").optim  # the weak setting stays constant
    assert _update_size(weak, 71, steps_per_epoch=10) == pytest.approx(weak.lr_head, rel=1e-3)


def test_conv_biases_before_batchnorm_are_not_trained():
    """Their true gradient is 0; Adam would otherwise step them by the full rate on rounding noise."""
    from configs import recola_visual
    from pkd_jax.config import build
    from pkd_jax.train.state import biases_before_batchnorm

    config = recola_visual.get_config("tiny")
    variables = build.init_variables(
        build.build_model(config), {"frames": np.zeros((1, 4, 32, 32, 3), np.uint8)}, 0
    )
    params = variables["params"]
    frozen = biases_before_batchnorm(params)
    assert len(frozen) == 16 and ("visual_cnn", "features_0", "bias") in frozen  # VGG19's 16 convs
    tx = make_optimizer(config.optim, params)
    noise = jax.tree.map(lambda p: jnp.full_like(p, 1e-9), params)  # tiny, as rounding noise is
    updates, _ = tx.update(noise, tx.init(params), params)
    assert float(jnp.abs(updates["visual_cnn"]["features_0"]["bias"]).max()) == 0.0
    assert float(jnp.abs(updates["visual_cnn"]["features_0"]["kernel"]).max()) > 0.0
    assert float(jnp.abs(updates["head"]["dense_0"]["bias"]).max()) > 0.0  # no BatchNorm after it
