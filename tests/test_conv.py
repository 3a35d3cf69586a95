"""`models.conv.Conv` against `flax.linen.Conv`, and the 2x2 max pool against `nn.max_pool`."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pkd_jax.models.common import max_pool_2x2
from pkd_jax.models.conv import Conv, choose_impl, conv_split, split_chunk


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
@pytest.mark.parametrize("impl", ["xla", "gemm", "split"])
def test_conv_matches_flax_conv(shape, kernel, strides, padding, impl):
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    n = len(kernel)
    ref = nn.Conv(
        4, kernel, strides=strides, padding=padding if isinstance(padding, int) else [(p, p) for p in padding]
    )
    ours = Conv(4, kernel, strides=strides, padding=padding, impl=impl)
    v_ref, v_ours = (jax.jit(m.init)(jax.random.key(0), x) for m in (ref, ours))
    # Same names, shapes and initial values: checkpoints and imported weights do not see the change.
    jax.tree.map(np.testing.assert_array_equal, v_ref, v_ours)
    # Each module's output and gradients in one program: run op by op, the im2col of "gemm" compiles a
    # slice per kernel offset.
    run = lambda m: jax.jit(
        lambda v, x: (
            m.apply(v, x),
            jax.grad(lambda v, x: jnp.sum(jnp.sin(m.apply(v, x))), argnums=(0, 1))(v, x),
        )
    )
    (y_ours, g_ours), (y_ref, g_ref) = run(ours)(v_ours, x), run(ref)(v_ref, x)
    np.testing.assert_allclose(y_ours, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert y_ours.shape[1 : 1 + n] == y_ref.shape[1 : 1 + n]


@pytest.mark.parametrize(
    "shape, kernel, strides, padding, chunk",
    [
        ((3, 12, 12, 8), (3, 3), (1, 1), (1, 1), 1),
        ((5, 12, 12, 8), (3, 3), (1, 1), (1, 1), 2),  # chunks of 2, 2 and 1
        ((3, 9, 14, 5), (3, 3), (2, 2), (1, 1), 1),
        ((4, 10, 7, 3), (5, 3), (2, 1), (2, 0), 3),  # non-square kernel, strides and padding
        ((2, 8, 8, 4), (3, 3), (1, 1), (0, 0), None),  # split_chunk's default: one chunk
    ],
)
def test_split_gradients_match_lax_conv(shape, kernel, strides, padding, chunk):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=(*kernel, shape[-1], 6)), jnp.float32)

    def lax_conv(x, w):
        pad = [(p, p) for p in padding]
        return jax.lax.conv_general_dilated(x, w, strides, pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))

    split = lambda x, w: conv_split(x, w, strides, padding, chunk)
    np.testing.assert_array_equal(split(x, w), lax_conv(x, w))  # the forward pass is XLA's
    dy = jnp.asarray(rng.normal(size=lax_conv(x, w).shape), jnp.float32)
    got = jax.jit(lambda x, w: jax.vjp(split, x, w)[1](dy))(x, w)
    want = jax.jit(lambda x, w: jax.vjp(lax_conv, x, w)[1](dy))(x, w)
    np.testing.assert_array_equal(got[0], want[0])  # so is the input gradient
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(want[1]))))


def test_auto_splits_only_float32_cpu_batches_beyond_the_chunk():
    vgg = lambda size, batch, c_in, c_out, **kw: choose_impl(
        "auto", (size, size), (3, 3), (1, 1), (1, 1), batch=batch, features=(c_in, c_out), **kw
    )
    assert split_chunk(10, (112, 112), (112, 112), (64, 64), 4) == 2  # 3.2 MB per image
    assert vgg(112, 10, 64, 64, platform="cpu") == "split"
    assert vgg(112, 10, 3, 64, platform="cpu") == "split"  # the stem's output gradient is as large
    assert vgg(112, 2, 64, 64, platform="cpu") == "xla"  # fits in one chunk
    assert vgg(14, 10, 512, 512, platform="cpu") == "xla"
    assert vgg(14, 40, 512, 512, platform="cpu") == "split"
    assert vgg(112, 10, 64, 64, platform="gpu") == "xla"
    assert vgg(112, 10, 64, 64, dtype=jnp.bfloat16, platform="cpu") == "xla"
    strided = choose_impl(
        "auto", (112, 112), (3, 3), (2, 2), (1, 1), batch=10, features=(64, 64), platform="cpu"
    )
    assert strided == "xla"
    # `jax.export` with a symbolic batch (the exported student's "b*t" frames): never split.
    (symbolic,) = jax.export.symbolic_shape("b")
    assert vgg(112, symbolic, 64, 64, platform="cpu") == "xla"


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
