"""Batches to network inputs: what each network reads and how a batch's arrays become its positional
and keyword inputs (frames scaled to [0, 1], audio and physiological windows, frozen trunks' cached
features). Shared by the train step, evaluation, the precomputed caches and inference."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from pkd_jax.models import Network, Teacher


def input_modalities(model: Any) -> tuple[str, ...]:
    """What a network reads: ("visual",) for a student, its modalities for a teacher, and both networks'
    for the one-stage pair."""
    if isinstance(model, Teacher):
        return model.modality_order
    teacher = getattr(model, "teacher", None)  # the one-stage pair holds a teacher and a student
    return teacher.modality_order if isinstance(teacher, Teacher) else ("visual",)


def eval_modalities(model: Any) -> tuple[str, ...]:
    """What a network's evaluation and prediction read: a teacher's modalities, else the frames (the
    one-stage pair predicts with its student)."""
    return model.modality_order if isinstance(model, Teacher) else ("visual",)


def model_inputs(model: Network, batch: dict[str, Any], dtype: DTypeLike) -> tuple[jax.Array | None, ...]:
    """Positional inputs of `model` from a batch: frames scaled to [0, 1], and for a teacher (or the
    one-stage pair) its audio and physiological windows.

    An input the batch lacks is None; the model then needs its trunk's features (`feature_inputs`).
    """
    frames = trunk_input("visual_cnn", batch["frames"], dtype) if "frames" in batch else None
    if input_modalities(model) == ("visual",):
        return (frames,)
    audio = trunk_input("audio_cnn", batch["audio"], dtype) if "audio" in batch else None
    physio = jnp.asarray(batch["physio"]).astype(dtype) if "physio" in batch else None
    return frames, audio, physio


def trunk_input(group: str, x: Any, dtype: DTypeLike) -> jax.Array:
    """A trunk's input as the networks take it: uint8 frames scaled to [0, 1] for `visual_cnn`, the
    (z-scored) audio windows as they are for `audio_cnn`, in the compute dtype."""
    x = jnp.asarray(x).astype(dtype)
    return x / 255.0 if group == "visual_cnn" else x


FEATURE_KEYS = ("visual_features", "audio_features")  # batch keys of frozen trunks' cached features


def feature_inputs(model: Network, batch: dict[str, Any]) -> dict[str, jax.Array]:
    """Keyword inputs of `model` from a batch: the frozen trunks' cached features it carries."""
    keys = FEATURE_KEYS if isinstance(model, Teacher) else FEATURE_KEYS[:1]
    return {k: jnp.asarray(batch[k], jnp.float32) for k in keys if k in batch}
