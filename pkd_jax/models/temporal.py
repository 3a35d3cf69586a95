"""One-layer recurrent networks over time with PyTorch's gate equations.

Both take [B, T, D] and an optional carry, and return ([B, T, H], new carry), so evaluation can run a
long video in chunks and carry the state across them. The input projection of all time steps is one
matmul outside the scan; only the hidden projection runs step by step.

Parameters mirror PyTorch's `nn.GRU` / `nn.LSTM` (`weight_ih_l0` -> `input.kernel`, `bias_ih_l0` ->
`input.bias`, `weight_hh_l0` -> `hidden_kernel`, `bias_hh_l0` -> `hidden_bias`).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike


def _uniform(scale: float) -> nn.initializers.Initializer:
    # PyTorch initialises every RNN weight and bias as U(-1/sqrt(H), 1/sqrt(H)).
    def init(key: jax.Array, shape: tuple[int, ...], dtype: DTypeLike = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -scale, scale)

    return init


class _Recurrent(nn.Module):
    """Shared parameters and scan for GRU / LSTM; subclasses define the gates."""

    hidden: int
    dtype: DTypeLike = jnp.float32
    num_gates: int = 0
    name_of_kind: ClassVar[str] = ""

    def _params(self) -> tuple[nn.Dense, jax.Array, jax.Array]:
        init = _uniform(self.hidden**-0.5)
        size = self.num_gates * self.hidden
        input_proj = nn.Dense(size, dtype=self.dtype, kernel_init=init, bias_init=init, name="input")
        hidden_kernel = self.param("hidden_kernel", init, (self.hidden, size))
        hidden_bias = self.param("hidden_bias", init, (size,))
        return input_proj, hidden_kernel.astype(self.dtype), hidden_bias.astype(self.dtype)

    def zero_carry(self, batch: int) -> jax.Array | tuple[jax.Array, jax.Array]:
        """The zero initial state used at the start of every clip."""
        return zero_carry(self.name_of_kind, self.hidden, batch)


class GRU(_Recurrent):
    """GRU with PyTorch's equations (gate order r, z, n; r multiplies the hidden projection of n)."""

    num_gates: int = 3
    name_of_kind: ClassVar[str] = "gru"

    def zero_carry(self, batch: int) -> jax.Array:
        """The zero initial state h [batch, hidden] used at the start of every clip."""
        return _zero_state(self.hidden, batch)

    @nn.compact
    def __call__(self, x: jax.Array, carry: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        input_proj, w_hh, b_hh = self._params()
        carry0 = self.zero_carry(x.shape[0]) if carry is None else carry
        xs = jnp.swapaxes(input_proj(x.astype(self.dtype)), 0, 1)  # [T, B, 3H]

        def step(h: jax.Array, xt: jax.Array) -> tuple[jax.Array, jax.Array]:
            hh = h.astype(self.dtype) @ w_hh + b_hh
            xr, xz, xn = jnp.split(xt, 3, axis=-1)
            hr, hz, hn = jnp.split(hh, 3, axis=-1)
            r = nn.sigmoid(xr + hr)
            z = nn.sigmoid(xz + hz)
            n = jnp.tanh(xn + r * hn)
            h = ((1.0 - z) * n + z * h).astype(jnp.float32)  # the state stays float32 under bf16
            return h, h

        final, hs = jax.lax.scan(step, carry0, xs)
        return jnp.swapaxes(hs, 0, 1).astype(self.dtype), final


class LSTM(_Recurrent):
    """LSTM with PyTorch's equations (gate order i, f, g, o); the carry is (h, c)."""

    num_gates: int = 4
    name_of_kind: ClassVar[str] = "lstm"

    def zero_carry(self, batch: int) -> tuple[jax.Array, jax.Array]:
        """The zero initial state (h, c), each [batch, hidden], used at the start of every clip."""
        zeros = _zero_state(self.hidden, batch)
        return zeros, zeros

    @nn.compact
    def __call__(
        self, x: jax.Array, carry: tuple[jax.Array, jax.Array] | None = None
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        input_proj, w_hh, b_hh = self._params()
        carry0 = self.zero_carry(x.shape[0]) if carry is None else carry
        xs = jnp.swapaxes(input_proj(x.astype(self.dtype)), 0, 1)  # [T, B, 4H]

        def step(
            hc: tuple[jax.Array, jax.Array], xt: jax.Array
        ) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
            h, c = hc
            gates = xt + h.astype(self.dtype) @ w_hh + b_hh
            i, f, g, o = jnp.split(gates, 4, axis=-1)
            c = (nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)).astype(jnp.float32)
            h = (nn.sigmoid(o) * jnp.tanh(c)).astype(jnp.float32)
            return (h, c), h

        final, hs = jax.lax.scan(step, carry0, xs)
        return jnp.swapaxes(hs, 0, 1).astype(self.dtype), final


RECURRENT = {"gru": GRU, "lstm": LSTM}


def _zero_state(hidden: int, batch: int) -> jax.Array:
    return jnp.zeros((batch, hidden), jnp.float32)


def zero_carry(kind: str, hidden: int, batch: int) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Zero state of a `kind` ("gru" or "lstm") layer: h [batch, hidden], or (h, c) for an LSTM."""
    zeros = _zero_state(hidden, batch)
    if kind == "gru":
        return zeros
    if kind == "lstm":
        return zeros, zeros
    raise ValueError(f"unknown rnn {kind!r}; choose one of {sorted(RECURRENT)}")
