"""A student's frozen teachers, before training: load each, cache its outputs, prepare its gate.

A student has a tuple of teachers, always: `teacher.workdir` (or `teacher.checkpoint`) names one, the
paper's setting, and `teacher.workdirs` several. Teacher k gives the batch keys `teacher_pred_<k>`,
`teacher_emb_<k>` and `gate_gamma_<k>` and its own theta (each teacher's gate is its own: its gamma,
its theta quantile, its files `<workdir>/gate.json`, or `gate_<k>.json` among several), combined in the
loss by `teacher.combine` (`pkd_jax.losses.combine_teachers`). Each teacher may read other modalities
(audio, physiological signals); in the cached mode each one's outputs are computed once, from its own
inputs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.typing import DTypeLike

from pkd_jax.config import build
from pkd_jax.data.cache import Cache
from pkd_jax.models import MODALITIES, Teacher
from pkd_jax.precompute import trunk_features
from pkd_jax.precompute.gate_track import prepare_gate
from pkd_jax.precompute.teacher_cache import compute_teacher_cache
from pkd_jax.precompute.teacher_shuffle import shuffle_rows
from pkd_jax.train import sharding
from pkd_jax.train.steps import teacher_key
from pkd_jax.workdir.config_record import read_config
from pkd_jax.workdir.trained import load_teacher


@dataclasses.dataclass(frozen=True)
class Teachers:
    """What training needs of a student's frozen teachers (empty for teachers and baselines)."""

    models: tuple[Teacher, ...] = ()
    variables: tuple[Any, ...] = ()  # replicated over the mesh
    sources: tuple[str, ...] = ()  # checkpoint directories
    thetas: tuple[float, ...] = ()  # each gate's threshold
    extra_arrays: dict[str, Any] = dataclasses.field(default_factory=dict)  # per clip start, for the pipeline

    def __len__(self) -> int:
        return len(self.models)

    @property
    def reads(self) -> tuple[str, ...]:
        """Every modality some teacher reads."""
        return tuple(m for m in MODALITIES if any(m in t.modality_order for t in self.models))

    @property
    def source(self) -> str:
        """The checkpoint(s), for the model card and the logs."""
        return ", ".join(self.sources)


def teacher_configs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
    """One config per teacher, each naming a single teacher in `teacher.workdir` / `teacher.checkpoint`."""
    if not config.teacher.workdirs:
        return [config]
    out = []
    for workdir in config.teacher.workdirs:
        single = ml_collections.ConfigDict(config.to_dict())
        single.teacher.workdir, single.teacher.checkpoint, single.teacher.workdirs = str(workdir), "", ()
        out.append(single)
    return out


def shuffled(teacher_cache: dict[str, dict[str, Any]], mode: str, cache: Cache) -> dict[str, dict[str, Any]]:
    """The cached teacher's per-clip outputs moved as `teacher.shuffle` says (the negative control,
    `pkd_jax.precompute.teacher_shuffle`). The track is left as computed: the gate stores it as the
    teacher's own and moves it the same way after loading (`prepare_gate`)."""
    if mode == "none":
        return teacher_cache
    frames = {v: cache.video(v).num_frames for v in cache.ids("train")}
    return {
        name: arrays if name == "teacher_track" else shuffle_rows(arrays, mode, frames)
        for name, arrays in teacher_cache.items()
    }


def gate_name(k: int, count: int) -> str:
    """Teacher k's gate files in the student's workdir: `gate.json` and `gate/` for a single teacher,
    `gate_<k>.json` and `gate_<k>/` among several."""
    return "gate" if count == 1 else f"gate_{k}"


def teacher_trunk_features(
    teacher: Teacher, variables: Any, source: str, cache: Cache
) -> dict[str, dict[str, np.ndarray]] | None:
    """The cached features of a teacher's frozen trunks on the training videos, computed with the
    teacher's own settings (its `config.json`), when it was trained on cached features; else None."""
    teacher_config = read_config(Path(source).parents[1] / "config.json")
    if not build.cached_trunks(teacher_config) or build.is_windowed(teacher_config):
        return None
    return trunk_features.frozen_feature_arrays(teacher_config, teacher, variables, cache)[0]


def prepare_teachers(
    config: ml_collections.ConfigDict,
    workdir: Path,
    cache: Cache,
    mesh: jax.sharding.Mesh,
    *,
    dtype: DTypeLike,
    chief: bool,
) -> Teachers:
    """Loads the student's teachers; in the cached mode computes each one's outputs; prepares each gate."""
    singles = teacher_configs(config)
    models, variables, sources, thetas = [], [], [], []
    extra: dict[str, Any] = {}
    for k, single in enumerate(singles):
        teacher, teacher_variables, source = load_teacher(single, mesh)
        local = sharding.local_view(teacher_variables)
        teacher_cache = None
        if config.teacher.mode == "cached":
            teacher_cache = compute_teacher_cache(
                teacher, local, cache, clip_frames=config.data.clip_frames, missing_face=config.data.missing_face,
                audio_window_s=config.data.audio_window_s, dtype=dtype,
                with_track=config.loss.gate_context == "window", physio=build.physio_pipeline(config),
                trunk_features=teacher_trunk_features(teacher, local, source, cache),
            )  # fmt: skip
            teacher_cache = shuffled(teacher_cache, config.teacher.shuffle, cache)
        gate_arrays, theta, _ = prepare_gate(
            config, workdir, teacher=teacher, teacher_variables=local, teacher_source=source, cache=cache,
            teacher_cache=teacher_cache, dtype=dtype, chief=chief, name=gate_name(k, len(singles)),
        )  # fmt: skip
        arrays = {key: v for key, v in (teacher_cache or {}).items() if key != "teacher_track"} | gate_arrays
        extra.update({teacher_key(key, k): v for key, v in arrays.items()})
        models.append(teacher)
        variables.append(teacher_variables)
        sources.append(source)
        thetas.append(theta)
    sizes = {t.fused_features[-1] if t.fusion == "concat" else t.jca.embedding_size for t in models}
    if len(sizes) > 1:
        raise ValueError(
            f"config.teacher.workdirs: the teachers' embeddings differ in size ({sorted(sizes)}); the student "
            "distils one embedding from all of them"
        )
    return Teachers(tuple(models), tuple(variables), tuple(sources), tuple(thetas), extra)
