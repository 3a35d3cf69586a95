"""`models.conv.Conv` against `flax.linen.Conv`, and the 2x2 max pool against `nn.max_pool`."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pkd_jax.models.common import max_pool_2x2
from pkd_jax.models.conv import Conv, choose_impl


@pytest.mark.parametrize(
    "shape, kernel, strides, padding",
    [
        ((2, 9, 11, 3), (3, 3), 1, 1),
        ((2, 9, 11, 3), (7, 7), 2, 3),
        ((2, 4, 7, 5), (3, 3), 2, 1),  # a ResNet stage-4 entry: 2x4 output, below the window
        ((2, 1, 1, 4), (1, 1), 1, 0),
        ((1, 3, 6, 6, 2), (3, 3, 3), 2, 1),  # R3D-style 3-D
        ((1, 4, 6, 6, 2), (3, 7, 7), (1, 2, 2), (1, 3, 3)),  # the R3D stem
    ],
)
@pytest.mark.parametrize("impl", ["xla", "gemm"])
def test_conv_matches_flax_conv(shape, kernel, strides, padding, impl):
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    n = len(kernel)
    ref = nn.Conv(
        4, kernel, strides=strides, padding=padding if isinstance(padding, int) else [(p, p) for p in padding]
    )
    ours = Conv(4, kernel, strides=strides, padding=padding, impl=impl)
    v_ref, v_ours = ref.init(jax.random.key(0), x), ours.init(jax.random.key(0), x)
    # Same names, shapes and initial values: checkpoints and imported weights do not see the change.
    jax.tree.map(np.testing.assert_array_equal, v_ref, v_ours)
    np.testing.assert_allclose(ours.apply(v_ours, x), ref.apply(v_ref, x), rtol=1e-5, atol=1e-5)
    grad = lambda m, v: jax.grad(lambda v, x: jnp.sum(jnp.sin(m.apply(v, x))), argnums=(0, 1))(v, x)
    for a, b in zip(jax.tree.leaves(grad(ours, v_ours)), jax.tree.leaves(grad(ref, v_ref)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert ours.apply(v_ours, x).shape[1 : 1 + n] == ref.apply(v_ref, x).shape[1 : 1 + n]


def test_auto_uses_gemm_only_below_the_window():
    assert choose_impl("auto", (2, 4), (3, 3), (1, 1), (1, 1)) == "gemm"  # 2x4 out < 3x3
    assert choose_impl("auto", (4, 7), (3, 3), (2, 2), (1, 1)) == "gemm"  # strided to 2x4
    assert choose_impl("auto", (7, 7), (3, 3), (1, 1), (1, 1)) == "xla"
    assert choose_impl("auto", (112, 112), (3, 3), (1, 1), (1, 1)) == "xla"
    assert choose_impl("auto", (2, 14, 14), (3, 3, 3), (1, 1, 1), (1, 1, 1)) == "gemm"  # 2 frames < 3
    assert choose_impl("xla", (2, 4), (3, 3), (1, 1), (1, 1)) == "xla"
    with pytest.raises(ValueError, match="conv impl"):
        choose_impl("cudnn", (2, 4), (3, 3), (1, 1), (1, 1))


@pytest.mark.parametrize("size", [8, 7])
def test_max_pool_2x2_matches_reduce_window(size):
    z = jnp.asarray(np.random.default_rng(1).normal(size=(2, size, size + 2, 3)), jnp.float32)
    ref = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
    np.testing.assert_array_equal(max_pool_2x2(jax.nn.relu(z)), ref(jax.nn.relu(z)))
    w = jnp.asarray(np.random.default_rng(2).normal(size=ref(z).shape), jnp.float32)
    # As in VGG, the pool follows a ReLU: windows of tied zeros split the gradient differently, but the
    # ReLU drops it, so the gradients with respect to the pre-activations agree exactly.
    grads = [jax.grad(lambda z, f=f: jnp.sum(w * f(jax.nn.relu(z))))(z) for f in (max_pool_2x2, ref)]
    np.testing.assert_array_equal(grads[0], grads[1])
    assert np.count_nonzero(grads[0]) > 0
