"""A student's frozen teachers, before training: load each, cache its outputs, prepare its gate.

One teacher (`teacher.workdir` or `teacher.checkpoint`) gives the batch keys `teacher_pred`,
`teacher_emb` and `gate_gamma` and one theta, as in the paper. Several (`teacher.workdirs`) give the keys
`teacher_pred_<k>`, `teacher_emb_<k>`, `gate_gamma_<k>`, one theta each (each teacher's gate is its own:
its gamma, its theta quantile, its files `<workdir>/gate_<k>.json`), combined in the loss by
`teacher.combine` (`pkd_jax.losses.multi_teacher`). Each teacher may read other modalities (audio,
physiological signals); in the cached mode each one's outputs are computed once, from its own inputs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import ml_collections
from jax.typing import DTypeLike

from pkd_jax import losses
from pkd_jax.data.cache import Cache
from pkd_jax.models import Teacher
from pkd_jax.precompute.gate_track import prepare_gate
from pkd_jax.precompute.teacher_cache import compute_teacher_cache
from pkd_jax.train import build, sharding
from pkd_jax.train.steps import teacher_key
from pkd_jax.workdir.trained import load_teacher


@dataclasses.dataclass
class Teachers:
    """What training needs of a student's frozen teachers."""

    models: tuple[Teacher, ...]
    variables: tuple[Any, ...]  # replicated over the mesh
    sources: tuple[str, ...]  # checkpoint directories
    thetas: tuple[float, ...]  # each gate's threshold
    extra_arrays: dict[str, Any]  # per-clip-start arrays for the input pipeline

    @property
    def several(self) -> bool:
        return len(self.models) > 1

    @property
    def model(self) -> Teacher | tuple[Teacher, ...]:
        """The step's `teacher`: the model, or the tuple of them for several."""
        return self.models if self.several else self.models[0]

    @property
    def step_variables(self) -> Any:
        """The step's `teacher_variables`: one variable tree, or the tuple of them for several."""
        return self.variables if self.several else self.variables[0]

    @property
    def reads(self) -> tuple[str, ...]:
        """Every modality some teacher reads."""
        return tuple(m for m in ("visual", "audio", "physio") if any(m in t.streams for t in self.models))

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


def prepare_teachers(
    config: ml_collections.ConfigDict,
    workdir: Path,
    cache: Cache,
    mesh: jax.sharding.Mesh,
    *,
    dtype: DTypeLike,
    chief: bool,
) -> Teachers:
    """Loads the student's teacher(s); in the cached mode computes each one's outputs; prepares each gate."""
    singles = teacher_configs(config)
    several = len(singles) > 1
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
            )  # fmt: skip
        gate_arrays, theta, _ = prepare_gate(
            config, workdir, teacher=teacher, teacher_variables=local, teacher_source=source, cache=cache,
            teacher_cache=teacher_cache, dtype=dtype, chief=chief, name=f"gate_{k}" if several else "gate",
        )  # fmt: skip
        arrays = {key: v for key, v in (teacher_cache or {}).items() if key != "teacher_track"} | gate_arrays
        extra.update({teacher_key(key, k, several): v for key, v in arrays.items()})
        models.append(teacher)
        variables.append(teacher_variables)
        sources.append(source)
        thetas.append(theta)
    if several:
        sizes = {t.fused_features[-1] if t.fusion == "concat" else t.jca.embedding_size for t in models}
        if len(sizes) > 1:
            raise ValueError(
                f"config.teacher.workdirs: the teachers' embeddings differ in size ({sorted(sizes)}); the student "
                "distils one embedding from all of them"
            )
    return Teachers(tuple(models), tuple(variables), tuple(sources), tuple(thetas), extra)


def student_loss(config: ml_collections.ConfigDict, thetas: tuple[float, ...]) -> losses.LossFn:
    """The student's loss: the config's composed loss with one teacher, or each teacher's gated terms
    (with its own theta) combined by `teacher.combine`."""
    if len(thetas) == 1:
        return build.build_loss(config, theta=thetas[0])
    lo = config.loss
    parts = [
        losses.compose_parts(
            ccc=lo.ccc,
            distill=lo.distill,
            gate=lo.gate,
            alpha=lo.alpha,
            theta=theta,
            gate_context=lo.gate_context,
        )
        for theta in thetas
    ]
    return losses.combine_teachers(parts, config.teacher.combine)
