"""Models and inputs from a config: the one place that maps config fields onto module arguments."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from pkd_jax import losses
from pkd_jax.data.cache import TARGETS
from pkd_jax.models import Student, Teacher

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def target_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The configured targets as a tuple (a single name is allowed in the config)."""
    return (config.targets,) if isinstance(config.targets, str) else tuple(config.targets)


def target_indices(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """Positions of the configured targets in the cache's (valence, arousal) label columns."""
    targets = target_names(config)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise ValueError(f"config.targets={targets}: each must be one of {TARGETS}")
    return tuple(TARGETS.index(t) for t in targets)


def compute_dtype(config: ml_collections.ConfigDict) -> jnp.dtype:
    if config.model.dtype not in DTYPES:
        raise ValueError(f"config.model.dtype={config.model.dtype!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[config.model.dtype]


def _visual_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    m = config.model
    return dict(
        vgg_width=m.vgg_width,
        visual_features=m.visual_features,
        cnn_dropout=m.cnn_dropout,
        rnn=m.rnn,
        rnn_hidden=m.rnn_hidden,
        num_targets=len(target_indices(config)),
        activation=m.activation,
        dtype=compute_dtype(config),
    )


def build_student(config: ml_collections.ConfigDict) -> Student:
    """The visual-only network (student and baseline share it)."""
    m = config.model
    return Student(head_features=tuple(m.head_features), embed_index=m.embed_index, **_visual_kwargs(config))


def build_teacher(config: ml_collections.ConfigDict) -> Teacher:
    """The audio-visual teacher of the weak setting."""
    m = config.model
    return Teacher(
        audio_width=m.audio_width,
        fusion_visual_features=m.fusion_visual_features,
        fused_features=tuple(m.fused_features),
        **_visual_kwargs(config),
    )


def build_model(config: ml_collections.ConfigDict) -> Student | Teacher:
    """The network the config's stage trains."""
    return build_teacher(config) if config.stage == "teacher" else build_student(config)


def model_inputs(model: Student | Teacher, batch: dict[str, Any], dtype: jnp.dtype) -> tuple[jax.Array, ...]:
    """Positional inputs of `model` from a batch: frames scaled to [0, 1], and audio for the teacher."""
    frames = jnp.asarray(batch["frames"]).astype(dtype) / 255.0
    if isinstance(model, Teacher):
        return frames, jnp.asarray(batch["audio"]).astype(dtype)
    return (frames,)


def init_variables(model: Student | Teacher, batch: dict[str, Any], seed: int) -> dict[str, Any]:
    """Initial variables from `seed`, shaped by one example of `batch`.

    The init key uses the "rbg" generator: with the default threefry, XLA on CPU spends half a minute
    compiling the random fills of a VGG19; rbg compiles in a few seconds and is just as deterministic.
    """
    one = {k: v[:1] for k, v in batch.items() if k in ("frames", "audio")}
    inputs = model_inputs(model, one, jnp.float32)
    key = jax.random.key(seed, impl="rbg")
    return jax.jit(lambda k: model.init(k, *inputs))(key)


def build_loss(config: ml_collections.ConfigDict) -> losses.LossFn:
    """The stage's loss: plain CCC for teachers and baselines, the composed PKD loss for students."""
    return losses.compose(
        ccc=config.loss.ccc,
        distill=config.loss.distill if config.stage == "student" else None,
        gate=config.loss.gate,
        alpha=config.loss.alpha,
        theta=config.loss.theta,
    )
