"""The concordance correlation coefficient, the CCC loss term and the masks they share.

Predictions and labels are [B, T, K]; masks are [B, T] (or the full shape). Masked positions may hold
anything, NaN included: every function here zeroes them before use.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from pkd_jax.ccc_kernel import LOSS_EPS, ccc_from_moments, masked_moments

Array = jax.Array
Outputs = Mapping[str, Array]
Batch = Mapping[str, Any]
TermFn = Callable[[Outputs, Batch], Array]
LossFn = Callable[[Outputs, Batch], tuple[Array, dict[str, Array]]]

CCC_EPS = LOSS_EPS  # why the loss has an eps and the metrics none: `pkd_jax.ccc_kernel`


def _expand_mask(mask: Array | None, like: Array) -> Array:
    """A float mask broadcast to `like`'s shape; frame masks [B, T] gain trailing axes."""
    if mask is None:
        return jnp.ones(like.shape, jnp.float32)
    mask = jnp.asarray(mask, jnp.float32)
    mask = mask.reshape(mask.shape + (1,) * (like.ndim - mask.ndim))
    return jnp.broadcast_to(mask, like.shape)


def ccc(
    pred: Array,
    target: Array,
    mask: Array | None = None,
    axis: int | tuple[int, ...] | None = None,
    eps: float = CCC_EPS,
) -> Array:
    """Concordance correlation coefficient (eq. 3) over `axis` (all axes when None).

    CCC = 2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2 + eps), with population moments over
    the frames where `mask` is 1, in float32, by `pkd_jax.ccc_kernel` (the metrics' and the gate's CCC
    too): a degenerate denominator (no frame, or both sequences constant and equal) gives 0. Masked
    positions may hold anything, NaN included; they are zeroed before use.

    Args:
      pred: predictions, e.g. [B, T, K].
      target: labels of the same shape as `pred`.
      mask: 1 for frames that count; any prefix shape of `pred` ([B, T] for [B, T, K]) or its full shape.
      axis: the axes to reduce: (0, 1) for CCC over the flattened batch per target, 1 per sequence.
      eps: added to the denominator; `CCC_EPS`, the loss's, by default.

    Returns:
      CCC with the `axis` dimensions removed.
    """
    pred = jnp.asarray(pred, jnp.float32)
    target = jnp.asarray(target, jnp.float32)
    moments = masked_moments(pred, target, _expand_mask(mask, pred), axis=axis, xp=jnp)
    value = ccc_from_moments(*moments, eps=eps, xp=jnp)
    return jnp.squeeze(value, axis=axis) if axis is not None else value.reshape(())


def ccc_loss(pred: Array, target: Array, mask: Array | None = None, *, per_sequence: bool = False) -> Array:
    """1 - CCC for [B, T, K] inputs, averaged over targets.

    Returns a scalar computed over the flattened batch, or with `per_sequence` one value per
    sequence [B] (a sequence with no valid frame gets 0).
    """
    if per_sequence:
        values = 1.0 - ccc(pred, target, mask, axis=1)  # [B, K]
        has_frames = jnp.sum(_expand_mask(mask, pred), axis=1) > 0
        return jnp.mean(jnp.where(has_frames, values, 0.0), axis=-1)
    return jnp.mean(1.0 - ccc(pred, target, mask, axis=tuple(range(pred.ndim - 1))))


def label_mask(batch: Batch) -> Array | None:
    """Frames whose label counts: `label_mask` times `frame_mask`, whichever are present, and, where the
    batch has it, times `labelled` [B] (0 for a clip of a recording without labels, whose labels no
    term or gate may see; `pkd_jax.data.labelled`)."""
    masks = [batch[k] for k in ("label_mask", "frame_mask") if batch.get(k) is not None]
    if batch.get("labelled") is not None:
        like = batch["labels"][..., 0]  # [B, T]: the flag of each clip over its frames
        masks.append(_expand_mask(batch["labelled"], like))
    if not masks:
        return None
    return functools.reduce(lambda a, b: jnp.asarray(a, jnp.float32) * b, masks)


CCC_REDUCTIONS = ("flattened", "per_sequence")


def ccc_term(reduction: str) -> TermFn:
    """L_ccc of the student's predictions, "flattened" over the batch or "per_sequence"."""
    if reduction not in CCC_REDUCTIONS:
        raise ValueError(f"unknown CCC reduction {reduction!r}; use 'flattened' or 'per_sequence'")
    per_sequence = reduction == "per_sequence"

    def term(outputs: Outputs, batch: Batch) -> Array:
        value = ccc_loss(outputs["pred"], batch["labels"], label_mask(batch), per_sequence=per_sequence)
        if batch.get("labelled") is None or per_sequence:
            return value  # per sequence, a clip without a valid label already gets 0
        # Flattened over a batch with no labelled clip there is nothing to agree with: 0, not 1 - CCC 0.
        # With a labelled clip the value is untouched, bit for bit.
        return jnp.where(jnp.any(jnp.asarray(batch["labelled"]) > 0), value, 0.0)

    return term
