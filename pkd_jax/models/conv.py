"""`Conv`: a drop-in `flax.linen.Conv` (same parameter names, shapes and init) with a choice of kernel.

XLA:CPU runs most convolutions through fast library kernels, but falls off them when an output spatial
dimension is smaller than the kernel window: ResNet-18's last stage on a 64x100 log-mel input (2x4 maps,
3x3 kernels) took 420 ms forward and 290 ms backward per batch of 10 windows, against 2 ms and 7 ms
for the same numbers computed as one matrix product of the im2col patches with the kernel
(`python benchmarks/conv_bench.py`). `impl="auto"` picks that product for exactly those layers and XLA's
convolution everywhere else (where it is the faster of the two on every shape we measured).

The product's gradient is two matrix products and a sum of shifted slices, all of which XLA runs fast,
so no custom VJP is needed.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import DTypeLike

IMPLS = ("auto", "xla", "gemm")


def _tuple(value: int | Sequence[int], n: int) -> tuple[int, ...]:
    return (value,) * n if isinstance(value, int) else tuple(value)


def output_shape(
    spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int], padding: Sequence[int]
):
    """Output spatial shape of a convolution with symmetric padding."""
    return tuple(
        (s + 2 * p - k) // st + 1 for s, k, st, p in zip(spatial, kernel, strides, padding, strict=True)
    )


def choose_impl(
    impl: str, spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int], padding: Sequence[int]
) -> str:
    """The implementation `impl="auto"` resolves to for one layer (see the module docstring)."""
    if impl not in IMPLS:
        raise ValueError(f"conv impl {impl!r}; choose one of {IMPLS}")
    if impl != "auto":
        return impl
    out = output_shape(spatial, kernel, strides, padding)
    return "gemm" if any(o < k for o, k in zip(out, kernel, strict=True)) else "xla"


def conv_gemm(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Sequence[int]) -> jax.Array:
    """N-d convolution as im2col patches (strided slices, offset-major) times the flattened kernel.

    x: [N, *spatial, C_in]; kernel: [*window, C_in, C_out]. Equal to `lax.conv_general_dilated` with
    symmetric padding up to float rounding.
    """
    window, c_in, c_out = kernel.shape[:-2], kernel.shape[-2], kernel.shape[-1]
    spatial = x.shape[1:-1]
    out = output_shape(spatial, window, strides, padding)
    x = jnp.pad(x, ((0, 0), *((p, p) for p in padding), (0, 0)))
    columns = []
    for offset in itertools.product(*(range(k) for k in window)):
        index = tuple(
            slice(o, o + st * (n - 1) + 1, st) for o, st, n in zip(offset, strides, out, strict=True)
        )
        columns.append(x[(slice(None), *index)])
    patches = jnp.concatenate(columns, axis=-1) if len(columns) > 1 else columns[0]
    flat = patches.reshape(-1, len(columns) * c_in) @ kernel.reshape(len(columns) * c_in, c_out)
    return flat.reshape(x.shape[0], *out, c_out)


def conv_xla(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Sequence[int]) -> jax.Array:
    """XLA's convolution, channels last."""
    n = x.ndim - 2
    if not 1 <= n <= 3:
        raise ValueError(f"convolutions over {n} spatial dimensions are not supported")
    spec, kernel_spec = "N" + "DHW"[-n:] + "C", "DHW"[-n:] + "IO"
    return lax.conv_general_dilated(
        x, kernel, tuple(strides), tuple((p, p) for p in padding), dimension_numbers=(spec, kernel_spec, spec)
    )


class Conv(nn.Module):
    """Channels-last convolution with symmetric integer padding, parameterised exactly like `nn.Conv`.

    `impl`: "auto" (per layer, see `choose_impl`), "xla" or "gemm". Parameters are `kernel`
    [*kernel_size, C_in, features] (LeCun normal) and `bias` [features] (zeros), kept in float32 and cast
    to `dtype` for the computation, so checkpoints and imported weights do not depend on `impl`.
    """

    features: int
    kernel_size: Sequence[int]
    strides: int | Sequence[int] = 1
    padding: int | Sequence[int] = 0
    use_bias: bool = True
    dtype: DTypeLike = jnp.float32
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n = len(self.kernel_size)
        strides, padding = _tuple(self.strides, n), _tuple(self.padding, n)
        kernel = self.param(
            "kernel",
            nn.initializers.lecun_normal(),
            (*self.kernel_size, x.shape[-1], self.features),
            jnp.float32,
        )
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        impl = choose_impl(self.impl, x.shape[1:-1], self.kernel_size, strides, padding)
        y = (conv_gemm if impl == "gemm" else conv_xla)(x, kernel, strides, padding)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(
                self.dtype
            )
        return y
