"""Models, inputs and data settings from a config: the one place that maps config fields onto module
arguments (networks, loss, feature cache, preprocessing and input pipeline)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

import jax
import jax.numpy as jnp
import ml_collections
from jax.typing import DTypeLike

from pkd_jax import losses
from pkd_jax.data.cache import TARGETS
from pkd_jax.data.physio_features import PHYSIO_FEATURES
from pkd_jax.data.pipeline import PipelineConfig
from pkd_jax.data.preprocess_config import PreprocessConfig
from pkd_jax.models import JCASettings, Network, Student, Teacher, TeacherStudent
from pkd_jax.models.inputs import model_inputs
from pkd_jax.models.pkd import check_modalities

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


def compute_dtype(config: ml_collections.ConfigDict) -> DTypeLike:
    if config.model.dtype not in DTYPES:
        raise ValueError(f"config.model.dtype={config.model.dtype!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[config.model.dtype]


def is_windowed(config: ml_collections.ConfigDict) -> bool:
    """True for the strong setting's windows of sub-sequences (`data.window_subsequences` > 0)."""
    return config.data.window_subsequences > 0


class WindowFields(TypedDict):
    """The window fields of `PipelineConfig`, as keyword arguments."""

    subsequences: int
    subsequence_frames: int


def window_fields(config: ml_collections.ConfigDict) -> WindowFields:
    """The window fields of `PipelineConfig` (subsequences 0: the weak setting's clips)."""
    return {
        "subsequences": config.data.window_subsequences,
        "subsequence_frames": config.data.subsequence_frames,
    }


def cache_dir(config: ml_collections.ConfigDict) -> Path | None:
    """The feature cache: `data.cache`, else `<data.root>/pkd_jax_cache`; None when the config names neither."""
    if not (config.data.cache or config.data.root):
        return None
    return Path(config.data.cache or Path(config.data.root) / "pkd_jax_cache")


def preprocess_config(config: ml_collections.ConfigDict) -> PreprocessConfig:
    """The preprocessing a training config builds its cache with: its face size, detector and alignment,
    and preprocessing's defaults for the rest."""
    d = config.data
    return PreprocessConfig(
        face_size=d.face_size,
        detector=d.face_detector,
        detector_weights=d.detector_weights,
        face_align=d.face_align,
    )


def teacher_modalities(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The teacher's modalities (`model.teacher_modalities`) in canonical order: visual, audio, physio."""
    return check_modalities(tuple(config.model.teacher_modalities))


def physio_pipeline(config: ml_collections.ConfigDict) -> PipelineConfig:
    """Settings of the physiological windows (`data.physio_window_*`), for `eval_batches`' `physio`."""
    return pipeline_config(config, batch_size=1, with_audio=False, train=False, with_physio=True)


def pipeline_config(
    config: ml_collections.ConfigDict,
    *,
    batch_size: int,
    with_audio: bool,
    train: bool,
    with_frames: bool = True,
    with_physio: bool = False,
) -> PipelineConfig:
    """The input pipeline's settings; `train` adds the config's augmentation and seed to the clip stream."""
    d = config.data
    extra = {"augment": d.augment, "seed": config.seed} if train else {}
    return PipelineConfig(
        clip_frames=d.clip_frames,
        batch_size=batch_size,
        missing_face=d.missing_face,
        with_audio=with_audio,
        with_frames=with_frames,
        audio_window_s=d.audio_window_s,
        with_physio=with_physio,
        physio_window_s=d.physio_window_s,
        physio_window_step=d.physio_window_step,
        **extra,
        **window_fields(config),
    )


def teacher_embedding_size(config: ml_collections.ConfigDict) -> int:
    """Size the student projects its embedding to; 0 where it already matches the teacher's.

    Only the strong setting's `jca_embedding="attended"` teacher (n d') differs from the student's
    embedding layer; the JCA regressor's hidden layer and the weak teacher's fused layer match it.
    """
    if config.model.fusion == "jca" and config.model.jca_embedding == "attended":
        return jca_settings(config).embedding_size
    return 0


def jca_settings(config: ml_collections.ConfigDict) -> JCASettings:
    """Joint cross-attention's settings: `model.jca_<name>` for each, the window length for `length`."""
    names = [f.name for f in dataclasses.fields(JCASettings) if f.name not in ("length", "num_modalities")]
    return JCASettings(
        length=config.data.window_subsequences,
        num_modalities=len(teacher_modalities(config)),
        **{name: config.model[f"jca_{name}"] for name in names},
    )


def _visual_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    m = config.model
    return dict(
        vgg_width=m.vgg_width,
        visual_features=m.visual_features,
        cnn_dropout=m.cnn_dropout,
        rnn=m.rnn,
        rnn_hidden=m.rnn_hidden,
        visual_trunk=m.visual_trunk,
        r3d_width=m.r3d_width,
        freeze_visual_cnn=m.freeze_visual_cnn,
        num_targets=len(target_indices(config)),
        activation=m.activation,
        dtype=compute_dtype(config),
    )


def build_student(config: ml_collections.ConfigDict) -> Student:
    """The visual-only network (student and baseline share it)."""
    m = config.model
    return Student(
        head_features=tuple(m.head_features),
        embed_index=m.embed_index,
        embed_features=teacher_embedding_size(config),
        **_visual_kwargs(config),
    )


def build_teacher(config: ml_collections.ConfigDict) -> Teacher:
    """The multimodal teacher (`model.teacher_modalities`): concat fusion (weak setting) or joint
    cross-attention over a window."""
    m = config.model
    if m.fusion == "jca" and not is_windowed(config):
        raise ValueError("model.fusion='jca' attends over a window: set data.window_subsequences > 0")
    return Teacher(
        modalities=teacher_modalities(config),
        physio_width=m.physio_width,
        physio_features=m.physio_features,
        audio_width=m.audio_width,
        fusion_visual_features=m.fusion_visual_features,
        fused_features=tuple(m.fused_features),
        fusion=m.fusion,
        jca=jca_settings(config),
        freeze_audio_cnn=m.freeze_audio_cnn,
        **_visual_kwargs(config),
    )


def is_joint(config: ml_collections.ConfigDict) -> bool:
    """One-stage distillation: a student whose teacher trains with it (`teacher.mode="joint"`)."""
    return config.stage == "student" and config.teacher.mode == "joint"


def build_model(config: ml_collections.ConfigDict) -> Student | Teacher | TeacherStudent:
    """The network the config's stage trains; for one-stage distillation, the teacher-student pair."""
    if is_joint(config):
        return TeacherStudent(teacher=build_teacher(config), student=build_student(config))
    return build_teacher(config) if config.stage == "teacher" else build_student(config)


def frozen_trunks(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The parameter groups the config freezes (`model.freeze_visual_cnn`, `model.freeze_audio_cnn`);
    the audio trunk only where the stage's network has one (the teacher)."""
    groups: tuple[str, ...] = ("visual_cnn",) if config.model.freeze_visual_cnn else ()
    if config.model.freeze_audio_cnn and config.stage == "teacher":
        groups += ("audio_cnn",)
    return groups


def cached_trunks(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The frozen trunks whose features come from the trunk-feature cache instead of the step."""
    return frozen_trunks(config) if config.model.frozen_features == "cached" else ()


def example_inputs(
    config: ml_collections.ConfigDict, *, teacher: bool, audio_channels: int = 1, n_mels: int = 64
) -> tuple[jax.Array | None, ...]:
    """Zero inputs of one example shaped as the config's model takes them (for shapes and complexity).

    Weak setting: one frame [1, 1, S, S, 3] and its audio window. Strong setting: a whole window
    [1, L, C, S, S, 3] (joint cross-attention needs all L steps) and L audio windows.
    """
    d = config.data
    size, audio_cols = d.face_size, max(1, round(d.audio_window_s * 100))  # 10 ms log-mel hop
    steps = (d.window_subsequences, d.clip_frames) if is_windowed(config) else (1,)
    frames = jnp.zeros((1, *steps, size, size, 3))
    if not teacher:
        return (frames,)
    modalities = teacher_modalities(config)
    audio = jnp.zeros((1, steps[0], n_mels, audio_cols, audio_channels)) if "audio" in modalities else None
    physio = None
    if "physio" in modalities:
        physio = jnp.zeros((1, steps[0], len(physio_pipeline(config).physio_offsets), len(PHYSIO_FEATURES)))
    return frames, audio, physio


def init_variables(model: Network, batch: dict[str, Any], seed: int) -> dict[str, Any]:
    """Initial variables from `seed`, shaped by one example of `batch`.

    The init key uses the "rbg" generator: with the default threefry, XLA on CPU spends half a minute
    compiling the random fills of a VGG19; rbg compiles in a few seconds and is just as deterministic.
    """
    one = {k: v[:1] for k, v in batch.items() if k in ("frames", "audio", "physio")}
    inputs = model_inputs(model, one, jnp.float32)
    key = jax.random.key(seed, impl="rbg")
    return _init_program(model)(key, *inputs)


@functools.cache
def _init_program(model: Network) -> Any:
    """`model.init`, jitted once per network (modules compare by value): the seeds of a population, or
    runs one after another in a process, compile it once."""
    return jax.jit(model.init)


def build_loss(config: ml_collections.ConfigDict, *, thetas: Sequence[float] = ()) -> losses.LossFn:
    """The stage's loss: plain CCC for teachers and baselines; for students the composed PKD loss of
    each teacher, combined by `teacher.combine` (`losses.combine_teachers`; one teacher is the paper's).

    `thetas`, one per teacher, override `config.loss.theta` (the student's setup resolves
    `loss.theta_quantile` into them); without them, one teacher at `config.loss.theta`. One-stage
    training has no precomputed window gamma: with `gate="none"` (which only reports gamma) it reports
    the batch's.
    """
    lo = config.loss
    if config.stage != "student":
        return losses.compose(ccc=lo.ccc, distill=None)
    context = lo.gate_context
    if is_joint(config) and lo.gate == "none" and context == "window":
        context = "batch"
    parts = [
        losses.compose_parts(
            ccc=lo.ccc, distill=lo.distill, gate=lo.gate, alpha=lo.alpha, theta=theta, gate_context=context
        )
        for theta in (thetas or (lo.theta,))
    ]
    return losses.combine_teachers(parts, config.teacher.combine)
