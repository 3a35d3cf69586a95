"""A student's clips of recordings without labels: supervised term off, distillation on.

With `config.data.labelled_recordings` set, a student's batch carries `labelled` [B], 1 for a clip of a
labelled recording and 0 otherwise (`pkd_jax.data.labelled`). Without that key nothing here applies and
the loss is the one before this feature existed. With it:

  * `label_mask` (`pkd_jax.losses.ccc`) drops the labels of unlabelled clips, so the CCC term is taken
    over the labelled clips only (0 for a batch without one) and no gradient reaches an unlabelled
    clip's predictions through it;
  * the supervised part of the loss is averaged over the labelled clips alone, at the weight a
    baseline gives it, and the distillation part over every clip with a real frame
    (`student_sequences`; `combine_teachers`): unlabelled clips add distillation without diluting the
    supervision (`without_supervision` zeroes their CCC weight, which a flattened CCC term, one scalar
    for the batch, would otherwise give them);
  * the gate: with no labels there is no evidence against the teacher, so its gamma there is 0
    (`unlabelled_gamma`), which every built-in gate reads as trusted: such clips are distilled, and
    `distilled_fraction` counts them. `teacher_gamma` and the gamma quantiles are reported over the
    labelled clips only.
"""

from __future__ import annotations

import jax.numpy as jnp

from pkd_jax.losses.ccc import Array, Batch, _expand_mask
from pkd_jax.losses.gates import GateWeights


def labelled_flags(batch: Batch) -> Array | None:
    """`batch["labelled"]` as float32 [B], or None where every clip is labelled (no such key)."""
    flags = batch.get("labelled")
    return None if flags is None else jnp.asarray(flags, jnp.float32)


def student_sequences(batch: Batch, labelled_valid: Array) -> Array:
    """Sequences a student's loss averages over: `labelled_valid` (those with a valid label, [B]) for
    labelled clips, and unlabelled clips with at least one real frame (their distillation counts)."""
    flags = labelled_flags(batch)
    if flags is None:
        return labelled_valid
    frames = batch.get("frame_mask")
    real = (
        jnp.ones_like(flags)
        if frames is None
        else jnp.sum(_expand_mask(frames, batch["labels"][..., 0]), axis=1) > 0
    )
    return jnp.where(flags > 0, labelled_valid, real.astype(jnp.float32))


def unlabelled_gamma(gamma: Array, batch: Batch) -> Array:
    """The gate's gamma with 0 on unlabelled clips (no labels, no evidence against the teacher: the
    gate opens); a batch-level gamma becomes one per clip. Unchanged without `labelled`."""
    flags = labelled_flags(batch)
    if flags is None:
        return gamma
    return jnp.where(flags > 0, jnp.asarray(gamma, jnp.float32), 0.0)


def without_supervision(weights: GateWeights, batch: Batch) -> GateWeights:
    """The gate's weights with the CCC weight 0 on unlabelled clips. Unchanged without `labelled`."""
    flags = labelled_flags(batch)
    if flags is None:
        return weights
    return weights._replace(ccc=jnp.where(flags > 0, weights.ccc, 0.0))
