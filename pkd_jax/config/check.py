"""Checks a training config before anything is written: every enumerated field, every range, and the
combinations that cannot run. A mistyped value (`stage="Teacher"`, `teacher.mode="cache"`) is an error
naming the field and its choices, never a silent fallback to another behaviour.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from pkd_jax import defaults
from pkd_jax.config import build
from pkd_jax.data.cache import TARGETS
from pkd_jax.data.labelled import check_labelled_field
from pkd_jax.data.pipeline import MISSING_FACE_POLICIES
from pkd_jax.data.preprocess_config import FACE_ALIGNMENTS, check_detector_name
from pkd_jax.losses import CCC_REDUCTIONS, DISTILL_TERMS, GATE_CONTEXTS, GATE_NAMES
from pkd_jax.precompute.teacher_shuffle import TEACHER_SHUFFLES
from pkd_jax.train.state import SCHEDULES


def _choices() -> dict[str, tuple[Any, ...]]:
    """Field -> its allowed values, from the modules that implement them."""
    return {
        "stage": defaults.STAGES,
        "data.dataset": defaults.DATASETS,
        "data.missing_face": MISSING_FACE_POLICIES,
        "data.face_align": FACE_ALIGNMENTS,
        "model.rnn": ("gru", "lstm"),
        "model.activation": ("relu", "none"),
        "model.visual_trunk": ("vgg19_bn", "r3d18"),
        "model.fusion": ("concat", "jca"),
        "model.jca_embedding": ("hidden", "attended"),
        "model.dtype": tuple(build.DTYPES),
        "model.freeze_visual_cnn": (False, True),
        "model.freeze_audio_cnn": (False, True),
        "model.frozen_features": ("cached", "online"),
        "loss.ccc": CCC_REDUCTIONS,
        "loss.distill": tuple(DISTILL_TERMS),
        "loss.gate": GATE_NAMES,
        "loss.gate_context": GATE_CONTEXTS,
        "teacher.mode": ("cached", "online", "joint"),
        "teacher.combine": ("average", "best"),
        "teacher.shuffle": TEACHER_SHUFFLES,
        "eval.score": ("mean_over_videos", "concatenated"),
        "optim.schedule": SCHEDULES,
    }


# Field -> (lowest allowed, what it means); integers unless the default is a float.
_AT_LEAST: dict[str, tuple[float, str]] = {
    "train.num_steps": (1, "optimizer steps"),
    "train.log_every": (1, "steps between logs"),
    "train.eval_every": (1, "steps between evaluations"),
    "train.checkpoint_every": (1, "steps between checkpoints"),
    "train.keep_latest": (1, "latest checkpoints kept"),
    "train.keep_best": (0, "best checkpoints kept"),
    "train.population": (1, "seeds trained together"),
    "data.batch_size": (1, "clips per step"),
    "data.unlabelled_batch_size": (0, "unlabelled clips per step (0: batch_size)"),
    "data.clip_frames": (1, "frames per clip"),
    "data.face_size": (1, "face crop side"),
    "data.preprocess_workers": (1, "preprocessing processes"),
    "data.eval_chunk_frames": (1, "frames per evaluation chunk"),
    "data.eval_videos_per_batch": (1, "videos evaluated together"),
    "data.eval_windows_per_batch": (1, "evaluation windows per batch"),
    "data.window_subsequences": (0, "sub-sequences per window (0: clips)"),
    "data.subsequence_frames": (1, "frames per sub-sequence"),
    "data.audio_window_s": (0.0, "seconds of audio per frame"),
    "data.physio_window_s": (0.0, "seconds of physiological features per frame"),
    "data.physio_window_step": (1, "frames between physiological window samples"),
    "model.physio_width": (1, "physio encoder channels"),
    "model.physio_features": (1, "physio encoder output size"),
    "teacher.warmup_steps": (0, "teacher-only steps of one-stage training"),
    "optim.lr_physio_cnn": (0.0, "learning rate"),
    "model.frozen_bn_calibration_frames": (0, "inputs for a frozen trunk's BN statistics (0: keep)"),
    "loss.alpha": (0.0, "distillation weight"),
    "optim.lr_visual_cnn": (0.0, "learning rate"),
    "optim.lr_temporal": (0.0, "learning rate"),
    "optim.lr_head": (0.0, "learning rate"),
    "optim.lr_audio_cnn": (0.0, "learning rate"),
    "optim.weight_decay": (0.0, "weight decay"),
    "optim.grad_clip": (0.0, "gradient-norm clip (0: off)"),
    "optim.warmup_steps": (0, "learning-rate warm-up steps"),
    "optim.final_lr_fraction": (0.0, "final fraction of the base learning rate"),
}


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node[part]
    return node


def check_values(config: ml_collections.ConfigDict) -> None:
    """Every enumerated field among its choices and every counted field in range, or a ValueError."""
    problems = []
    for field, choices in _choices().items():
        value = _get(config, field)
        if value not in choices:
            problems.append(f"config.{field}={value!r}: choose one of {list(choices)}")
    for field, (low, meaning) in _AT_LEAST.items():
        value = _get(config, field)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"config.{field}={value!r}: must be a number ({meaning})")
        elif isinstance(low, int) and not isinstance(low, bool) and isinstance(value, float):
            problems.append(f"config.{field}={value!r}: must be a whole number ({meaning})")
        elif value < low:
            problems.append(f"config.{field}={value!r}: must be >= {low} ({meaning})")
    try:
        check_detector_name(config.data.face_detector)
    except ValueError as e:
        problems.append(f"config.data.face_detector: {e}")
    if config.data.face_align == "landmarks" and config.data.face_detector == "haar":
        problems.append(
            "config.data.face_align='landmarks' needs a detector that gives landmarks: set "
            "data.face_detector='mtcnn' (with data.detector_weights)"
        )
    problems.extend(_schedule_problems(config))
    targets = tuple(config.targets)
    if not targets or len(set(targets)) != len(targets) or not set(targets) <= set(TARGETS):
        problems.append(f"config.targets={targets}: one or both of {TARGETS}, each once")
    profile = tuple(config.train.profile_steps)
    if profile and (len(profile) != 2 or not 0 <= profile[0] < profile[1]):
        problems.append(f"config.train.profile_steps={profile}: () or (first, last) with first < last")
    seeds = tuple(config.train.population_seeds)
    if seeds and (len(seeds) != config.train.population or len(set(seeds)) != len(seeds)):
        problems.append(
            f"config.train.population_seeds={seeds}: () or {config.train.population} distinct seeds "
            f"(train.population={config.train.population})"
        )
    problems.extend(check_labelled_field(config.data.labelled_recordings))
    if problems:
        raise ValueError("invalid config: " + "; ".join(problems))


def _schedule_problems(config: ml_collections.ConfigDict) -> list[str]:
    """The learning-rate schedule's fields that cannot take effect as written (ranges are in _AT_LEAST).

    Each schedule ignores the other's fields, so a field set for the other one is an error rather than
    a run that silently trains with another schedule than the one asked for.
    """
    o, problems = config.optim, []
    fraction = o.final_lr_fraction  # its type and lower bound are checked with _AT_LEAST
    if isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and fraction > 1.0:
        problems.append(f"config.optim.final_lr_fraction={fraction!r}: must be in [0, 1]")
    if o.schedule == "warmup_cosine":
        if isinstance(o.warmup_steps, int) and o.warmup_steps >= config.train.num_steps:
            problems.append(
                f"config.optim.warmup_steps={o.warmup_steps}: must be < train.num_steps="
                f"{config.train.num_steps} (the cosine decay follows the warm-up)"
            )
        if o.lr_decay != 1.0:
            problems.append(
                f"config.optim.lr_decay={o.lr_decay!r} is the 'step' schedule's: set optim.lr_decay=1.0 "
                "with optim.schedule='warmup_cosine'"
            )
    elif o.schedule == "step" and o.warmup_steps != 0:
        problems.append(
            f"config.optim.warmup_steps={o.warmup_steps!r} is the 'warmup_cosine' schedule's: set "
            "optim.schedule='warmup_cosine', or optim.warmup_steps=0"
        )
    return problems


def validate_teachers(config: ml_collections.ConfigDict) -> None:
    """A student's teacher settings: one teacher, several (`teacher.workdirs`), or one-stage (`joint`)."""
    t = config.teacher
    named = bool(t.workdir or t.checkpoint)
    if t.shuffle != "none" and t.mode != "cached":
        raise ValueError(
            f"config.teacher.shuffle={t.shuffle!r} moves the cached teacher's outputs: it needs "
            f"teacher.mode='cached', not {t.mode!r}"
        )
    if t.mode == "joint":
        if named or t.workdirs:
            raise ValueError(
                "config.teacher.mode='joint' trains its own teacher (model.teacher_modalities) in the same "
                "run: leave teacher.workdir, teacher.checkpoint and teacher.workdirs empty"
            )
        gated = config.loss.gate != "none"
        if gated and (config.loss.theta_quantile or config.loss.gate_context == "window"):
            raise ValueError(
                "config.teacher.mode='joint': the teacher changes every step, so there is no gamma over the "
                "training clips before training: use loss.gate_context 'clip' or 'batch' with "
                "loss.theta_quantile=0 (an absolute loss.theta), or loss.gate='none'"
            )
        if build.cached_trunks(config):
            raise ValueError("config.teacher.mode='joint' trains every trunk: no frozen cached features")
        return
    if t.warmup_steps:
        raise ValueError("config.teacher.warmup_steps is for teacher.mode='joint' (one-stage training)")
    if t.workdirs:
        if named:
            raise ValueError("set config.teacher.workdirs (several teachers) or teacher.workdir, not both")
        if len(set(t.workdirs)) != len(t.workdirs):
            raise ValueError(f"config.teacher.workdirs names a teacher twice: {tuple(t.workdirs)}")
    elif not named:
        raise ValueError(
            "a student needs its teacher: set config.teacher.workdir (or teacher.checkpoint, or "
            "teacher.workdirs for several, or teacher.mode='joint' for one-stage training)"
        )
    if t.mode == "cached" and build.is_windowed(config):
        raise ValueError("windows (data.window_subsequences > 0) need config.teacher.mode='online'")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Stops early, with what to set, on configs that cannot run."""
    from pkd_jax.precompute.gate_track import validate_gate_config

    check_values(config)
    if not config.data.root and not config.data.cache:
        raise ValueError(
            f"config.data.root is not set: point it at the {config.data.dataset} corpus "
            "(--config.data.root=/path/to/corpus). Without real data, generate the synthetic corpus "
            "(python -m pkd_jax.data.synthetic --out=DIR) and train on it with "
            "--config.data.dataset=synthetic --config.data.root=DIR."
        )
    build.teacher_modalities(config)  # a ValueError naming the problem
    if config.stage == "student":
        validate_teachers(config)
        validate_gate_config(config)
    if config.data.augment and "visual_cnn" in build.cached_trunks(config):
        raise ValueError(
            "config.data.augment changes pixels, which a frozen visual trunk's cached features cannot "
            "follow: set data.augment=False, or model.frozen_features='online' to run the frozen trunk "
            "on the augmented frames in every step"
        )
    unknown_splits = set(config.eval.final_splits) - {"train", "dev", "test"}
    if unknown_splits:
        raise ValueError(f"config.eval.final_splits: unknown split(s) {sorted(unknown_splits)}")
