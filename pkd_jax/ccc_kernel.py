"""The concordance correlation coefficient from moments: one definition for numpy and jax.numpy.

    CCC = 2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2 + eps)

with population (1/N) moments. Every CCC of the package comes from `ccc_from_moments`: the differentiable
loss (`pkd_jax.losses.ccc`, jax.numpy, float32), the reported metrics (`pkd_jax.metrics`, numpy, float64)
and the gate's gamma precomputed from the teacher's track (`pkd_jax.precompute.gate_track`, numpy,
float64). The array module is an argument (`xp`), so all three run the same operations in the same order.

Edge cases, one convention for all: a *degenerate* denominator -- no frame at all, or both sequences
constant and equal, so that var(x) + var(y) + (mean(x) - mean(y))^2 is zero up to rounding -- gives CCC 0
("no agreement") rather than 0/0. "Up to rounding" is at most `DEGENERATE_REL * (mean(x)^2 + mean(y)^2)`:
float64 values near a mean m are resolved to about 2.2e-16 |m|, so a smaller spread carries no
information. The test is written `<=` so that NaN from unmasked NaN inputs propagates instead of reading
as 0. The choice is made with `where` selects, so a non-degenerate CCC is the plain formula, bit for bit.
Where rounding leaves a constant pair a spread above that (a float32 mean that rounds, the gate's
one-pass window moments), it is `eps` that keeps the CCC near 0 (below 1e-6 for values of order 1).

Why `eps` is a parameter (the one place this is decided):
  * `LOSS_EPS` = 1e-8 for the loss: its value has been part of the training objective from the start, and
    in float32 the spread of a constant sequence whose mean rounds is rounding noise above the degenerate
    test; eps keeps the CCC and its gradient finite and near 0 there;
  * the same 1e-8 for the gate's gamma precomputed in float64 (`gate_track`): it must decide as the gamma
    the loss computes online with its own CCC (an online teacher's "clip" and "batch" contexts);
  * `METRIC_EPS` = 0 for reported metrics: evaluation numbers are the textbook CCC, comparable with other
    work, and float64 leaves no finite-gradient concern.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

LOSS_EPS = 1e-8
METRIC_EPS = 0.0
DEGENERATE_REL = 1e-30


def ccc_from_moments(
    mean_x: Any, mean_y: Any, var_x: Any, var_y: Any, cov: Any, *, eps: float, xp: ModuleType
) -> Any:
    """CCC from population moments (arrays of one shape, or broadcastable), elementwise.

    Args:
      mean_x, mean_y, var_x, var_y, cov: the moments; numpy or jax arrays, as `xp` works on.
      eps: added to the denominator (`LOSS_EPS` for the loss and the gate, `METRIC_EPS` for metrics).
      xp: the array module, `numpy` or `jax.numpy`; the result has its array type and the moments' dtype.

    Returns:
      The CCC, 0 where the denominator is degenerate (see the module docstring).
    """
    spread = var_x + var_y + (mean_x - mean_y) ** 2
    degenerate = spread <= DEGENERATE_REL * (mean_x**2 + mean_y**2)
    # The division sees 1 where the result is discarded: no 0/0 to warn about or to poison gradients.
    safe = xp.where(degenerate, 1.0, spread + eps)
    return xp.where(degenerate, 0.0, 2.0 * cov / safe)


def masked_moments(
    x: Any, y: Any, w: Any, *, axis: int | tuple[int, ...] | None, xp: ModuleType
) -> tuple[Any, Any, Any, Any, Any]:
    """Two-pass population moments of `x` and `y` over the frames where `w` > 0, reduced over `axis`.

    Masked entries may hold anything, NaN included: they are zeroed before any arithmetic. A reduction
    with no frame divides by 1 and gives zero moments, a degenerate denominator for `ccc_from_moments`.

    Args:
      x, y: arrays of one shape, already in the dtype to compute in.
      w: the mask, 1 where a frame counts, broadcastable to `x` (sums over it are exact counts).
      axis: the axes to reduce; they are kept with size 1 (`keepdims`), all of them when None.
      xp: the array module, `numpy` or `jax.numpy`.

    Returns:
      (mean_x, mean_y, var_x, var_y, cov).
    """
    valid = w > 0
    x = xp.where(valid, x, 0.0)
    y = xp.where(valid, y, 0.0)
    n = xp.maximum(xp.sum(w, axis=axis, keepdims=True), 1.0)
    mean_x = xp.sum(w * x, axis=axis, keepdims=True) / n
    mean_y = xp.sum(w * y, axis=axis, keepdims=True) / n
    dx = w * (x - mean_x)
    dy = w * (y - mean_y)
    var_x = xp.sum(dx * dx, axis=axis, keepdims=True) / n
    var_y = xp.sum(dy * dy, axis=axis, keepdims=True) / n
    cov = xp.sum(dx * dy, axis=axis, keepdims=True) / n
    return mean_x, mean_y, var_x, var_y, cov
