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


def _cosine_optim(warmup_steps: int = 10, final_fraction: float = 0.1):
    optim = defaults.get_config("teacher", "recola").optim
    optim.schedule = "warmup_cosine"
    optim.warmup_steps, optim.final_lr_fraction = warmup_steps, final_fraction
    return optim


@pytest.mark.parametrize("field", ["lr_head", "lr_temporal", "lr_visual_cnn"])
def test_warmup_cosine_rises_from_zero_peaks_at_the_warmup_end_and_ends_at_the_fraction(field):
    from pkd_jax.train.state import learning_rate

    optim = _cosine_optim()
    base = optim[field]  # every group follows the same shape with its own base rate
    rate = learning_rate(optim, base, steps_per_epoch=7, total_steps=100)
    assert callable(rate)
    assert float(rate(0)) == 0.0
    assert float(rate(5)) == pytest.approx(0.5 * base, rel=1e-5)  # linear warm-up
    assert float(rate(10)) == pytest.approx(base, rel=1e-5)
    assert float(rate(55)) == pytest.approx(base * (0.1 + 0.9 * 0.5), rel=1e-5)  # half-way down the cosine
    assert float(rate(100)) == pytest.approx(0.1 * base, rel=1e-5)
    assert float(rate(150)) == pytest.approx(0.1 * base, rel=1e-5)  # held after num_steps


def test_warmup_cosine_drives_adam_and_needs_the_total_steps():
    params = {"head": {"w": jnp.ones(3)}}
    optim = _cosine_optim(warmup_steps=0, final_fraction=0.0)
    tx = make_optimizer(optim, params, total_steps=4)
    state, grads = tx.init(params), {"head": {"w": jnp.ones(3)}}
    sizes = []
    for _ in range(5):
        updates, state = tx.update(grads, state, params)
        sizes.append(float(jnp.abs(updates["head"]["w"][0])))
    # Adam's step on a constant gradient is the rate: cos from lr_head at step 0 to 0 at step 4.
    expected = optim.lr_head * 0.5 * (1 + np.cos(np.pi * np.arange(5).clip(max=4) / 4))
    np.testing.assert_allclose(sizes, expected, rtol=1e-4, atol=1e-12)
    with pytest.raises(ValueError, match=r"train\.num_steps"):
        make_optimizer(optim, params)


def test_the_step_schedule_is_unchanged():
    from pkd_jax.train.state import learning_rate

    optim = defaults.affwild2(defaults.get_config("teacher", "affwild2")).optim
    assert optim.schedule == "step"
    rate = learning_rate(optim, 1e-3, steps_per_epoch=10, total_steps=None)
    reference = step_decay(1e-3, 0.8, start_step=50, every_steps=20)
    steps = jnp.arange(120)
    np.testing.assert_array_equal(rate(steps), reference(steps))  # bit for bit
    constant = defaults.get_config("teacher", "recola").optim
    assert learning_rate(constant, 1e-4, steps_per_epoch=10, total_steps=5) == 1e-4
    optim.schedule = "linear"
    with pytest.raises(ValueError, match=r"choose one of \['step', 'warmup_cosine'\]"):
        learning_rate(optim, 1e-3, steps_per_epoch=10, total_steps=100)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"optim.schedule": "cosine"}, r"optim.schedule='cosine': choose one of \['step', 'warmup_cosine'\]"),
        ({"optim.warmup_steps": -1}, r"optim.warmup_steps=-1: must be >= 0"),
        ({"optim.final_lr_fraction": 1.5}, r"optim.final_lr_fraction=1.5: must be in \[0, 1\]"),
        ({"optim.final_lr_fraction": -0.1}, r"optim.final_lr_fraction=-0.1: must be >= 0"),
        ({"optim.warmup_steps": 20}, r"optim.warmup_steps=20: must be < train.num_steps=20"),
        ({"optim.lr_decay": 0.8}, r"optim.lr_decay=0.8 is the 'step' schedule's"),
        ({"optim.schedule": "step", "optim.warmup_steps": 5}, r"optim.warmup_steps=5 is the 'warmup_cosine'"),
    ],
)
def test_schedule_fields_are_checked(changes, message):
    from pkd_jax.config.check import check_values

    config = defaults.tiny(defaults.get_config("teacher", "recola"))  # num_steps 20
    config.optim.schedule, config.optim.warmup_steps, config.optim.final_lr_fraction = "warmup_cosine", 5, 0.1
    check_values(config)  # a valid warm-up and cosine
    for field, value in changes.items():
        section, name = field.split(".")
        config[section][name] = value
    with pytest.raises(ValueError, match=message):
        check_values(config)


def test_a_new_num_steps_is_an_amendment_under_the_cosine_schedule(tmp_path):
    """The cosine ends at num_steps: a new count changes the rate of every resumed step."""
    from pkd_jax.workdir.config_record import ConfigChangeError, record_config

    config = defaults.get_config("visual", "recola")
    config.optim.schedule, config.optim.warmup_steps = "warmup_cosine", 100
    record_config(config, tmp_path)
    (tmp_path / "checkpoints" / "3").mkdir(parents=True)
    config.train.num_steps = 40_000
    with pytest.raises(ConfigChangeError, match=r"train.num_steps: 20000 -> 40000"):
        record_config(config, tmp_path)
    assert record_config(config, tmp_path, allow_change=True) == ["train.num_steps"]
    step = defaults.get_config("visual", "recola")  # the staircase does not depend on num_steps
    (tmp_path / "step" / "checkpoints").mkdir(parents=True)
    record_config(step, tmp_path / "step")
    (tmp_path / "step" / "checkpoints" / "3").mkdir()
    step.train.num_steps = 40_000
    assert record_config(step, tmp_path / "step") == ["train.num_steps"]
