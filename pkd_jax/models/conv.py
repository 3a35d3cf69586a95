"""`Conv`: a drop-in `flax.linen.Conv` (same parameter names, shapes and init) with a choice of kernel.

XLA:CPU runs most convolutions through fast library kernels, but falls off them when an output spatial
dimension is smaller than the kernel window: ResNet-18's last stage on a 64x100 log-mel input (2x4 maps,
3x3 kernels) took 420 ms forward and 290 ms backward per batch of 10 windows, against 2 ms and 7 ms
for the same numbers computed as one matrix product of the im2col patches with the kernel
(`python benchmarks/conv_bench.py`). `impl="auto"` picks that product for exactly those layers (elsewhere
XLA's convolution was the faster of the two on every shape we measured).

The product's gradient is two matrix products and a sum of shifted slices, all of which XLA runs fast,
so no custom VJP is needed.

The other weak spot is XLA:CPU's convolution *weight gradient*: its time per image grows 2-5x once
the batch's input or output gradient outgrows the caches (VGG19's 112x112x64 layer: 12 ms per image in
batches of 4, 23 in batches of 10; its 28x28x256 layer: 21 ms per image in batches of 10, 98 in 20; on
the 2-core development CPU, see docs/benchmarks.md).
`impl="split"` keeps XLA's forward pass and input gradient and sums the weight gradient over chunks of
`split_chunk` images, each a separate XLA convolution (a custom VJP); `"auto"` picks it on CPU for
stride-1 float32 layers whose batch it would split. On other platforms its weight gradient is XLA's own
(`lax.platform_dependent`), so GPUs keep cuDNN's.

Under `per_member_kernels()` (a population's step, vmapped over members that each have their own
kernels) XLA would run every convolution as a grouped convolution, which XLA:CPU computes several times
slower per member than the plain one; `"auto"` then picks the im2col product on CPU, which the vmap turns
into a batched matrix product (docs/benchmarks.md, "Populations").
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
import math
from collections.abc import Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import DTypeLike

IMPLS = ("auto", "xla", "gemm", "split")
SPLIT_BYTES = 8 << 20  # most bytes of input or output gradient per chunk of the split weight gradient
_PER_MEMBER = contextvars.ContextVar("per_member_kernels", default=False)


@contextlib.contextmanager
def per_member_kernels() -> Iterator[None]:
    """While tracing inside it, convolutions are vmapped over kernels (one per population member)."""
    token = _PER_MEMBER.set(True)
    try:
        yield
    finally:
        _PER_MEMBER.reset(token)


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
    impl: str,
    spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[int],
    *,
    batch: int = 1,
    features: tuple[int, int] = (0, 0),
    dtype: DTypeLike = jnp.float32,
    platform: str | None = None,
) -> str:
    """The implementation `impl="auto"` resolves to for one layer (see the module docstring).

    `batch`, `features` (input, output channels), `dtype` and `platform` (default: JAX's default backend)
    only decide whether "auto" splits the weight gradient.
    """
    if impl not in IMPLS:
        raise ValueError(f"conv impl {impl!r}; choose one of {IMPLS}")
    if impl != "auto":
        return impl
    if _PER_MEMBER.get() and (platform or jax.default_backend()) == "cpu":
        return "gemm"
    out = output_shape(spatial, kernel, strides, padding)
    if any(o < k for o, k in zip(out, kernel, strict=True)):
        return "gemm"
    split = (
        isinstance(batch, int)  # a symbolic batch (`jax.export`) is never split: its size is unknown
        and (platform or jax.default_backend()) == "cpu"
        and jnp.dtype(dtype) == jnp.float32
        and all(s == 1 for s in strides)
        and split_chunk(batch, spatial, out, features, jnp.dtype(dtype).itemsize) < batch
    )
    return "split" if split else "xla"


def split_chunk(
    batch: int, spatial: Sequence[int], out: Sequence[int], features: tuple[int, int], itemsize: int
) -> int:
    """Images per chunk of the split weight gradient: the most whose input and output gradient each
    fit in `SPLIT_BYTES` (at least one)."""
    per_image = max(math.prod(spatial) * features[0], math.prod(out) * features[1]) * itemsize
    return max(1, min(batch, SPLIT_BYTES // max(per_image, 1)))


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


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_split(
    x: jax.Array,
    kernel: jax.Array,
    strides: Sequence[int],
    padding: Sequence[int],
    chunk: int | None = None,
) -> jax.Array:
    """`conv_xla` whose kernel gradient on CPU is a sum over chunks of `chunk` images (default:
    `split_chunk`'s); see the module docstring. `strides` and `padding` must be hashable (tuples)."""
    return conv_xla(x, kernel, strides, padding)


def _split_fwd(
    x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Sequence[int], chunk: int | None
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return conv_xla(x, kernel, strides, padding), (x, kernel)


def _split_bwd(
    strides: Sequence[int],
    padding: Sequence[int],
    chunk: int | None,
    residuals: tuple[jax.Array, jax.Array],
    dy: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    x, kernel = residuals
    dx = jax.vjp(lambda a: conv_xla(a, kernel, strides, padding), x)[1](dy)[0]

    def kernel_grad(x: jax.Array, dy: jax.Array) -> jax.Array:
        return jax.vjp(lambda k: conv_xla(x, k, strides, padding), kernel)[1](dy)[0]

    def chunked(x: jax.Array, dy: jax.Array) -> jax.Array:
        features = (x.shape[-1], dy.shape[-1])
        n = chunk or split_chunk(x.shape[0], x.shape[1:-1], dy.shape[1:-1], features, x.dtype.itemsize)
        # A Python loop, not a scan: XLA:CPU ran these convolutions ~30x slower inside a loop body.
        parts = [
            kernel_grad(x[i : i + n], dy[i : i + n]).astype(jnp.float32) for i in range(0, x.shape[0], n)
        ]
        return sum(parts[1:], parts[0]).astype(kernel.dtype)

    return dx, lax.platform_dependent(x, dy, cpu=chunked, default=kernel_grad)


conv_split.defvjp(_split_fwd, _split_bwd)


class Conv(nn.Module):
    """Channels-last convolution with symmetric integer padding, parameterised exactly like `nn.Conv`.

    `impl`: "auto" (per layer, see `choose_impl`), "xla", "gemm" or "split". Parameters are `kernel`
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
        impl = choose_impl(
            self.impl,
            x.shape[1:-1],
            self.kernel_size,
            strides,
            padding,
            batch=x.shape[0],
            features=(x.shape[-1], self.features),
            dtype=self.dtype,
        )
        if impl == "split":
            y = conv_split(x, kernel, tuple(strides), tuple(padding))
        else:
            y = (conv_gemm if impl == "gemm" else conv_xla)(x, kernel, strides, padding)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(
                self.dtype
            )
        return y
