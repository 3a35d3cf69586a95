"""The one reader of a trained workdir (`<workdir>/config.json` and `<workdir>/checkpoints/<step>`).

Inference (`pkd_jax.inference`: predict, export) loads a network's parameters as numpy arrays with
`load_trained`; a student's training loads its frozen teacher onto the device mesh with `load_teacher`.
Both read the config with `read_config`, which fills fields added to pkd_jax since the workdir was
written, so an older workdir loads the same way everywhere.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from pkd_jax.config import build
from pkd_jax.data.cache import TARGETS
from pkd_jax.models import Student, Teacher
from pkd_jax.models.inputs import input_modalities
from pkd_jax.models.joint import TeacherStudent
from pkd_jax.train import sharding
from pkd_jax.workdir.checkpoints import Checkpointer, check_tree_shapes, short_reason, silence_stray_callbacks
from pkd_jax.workdir.config_record import read_config
from pkd_jax.workdir.population_record import check_not_population


@dataclasses.dataclass
class Trained:
    """A trained network ready for inference.

    Attributes:
      config: The training config (the workdir's config.json).
      model: The Student or Teacher it builds.
      variables: `{"params", "batch_stats"}` as numpy arrays.
      step: The checkpoint's step.
      source: The checkpoint directory.
    """

    config: ml_collections.ConfigDict
    model: Student | Teacher
    variables: dict[str, Any]
    step: int
    source: Path

    @property
    def is_teacher(self) -> bool:
        return isinstance(self.model, Teacher)

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(TARGETS[i] for i in build.target_indices(self.config))


def locate(workdir: str | Path | None, checkpoint: str | Path | None) -> tuple[Path, int | None]:
    """(workdir, step or None for the best) from exactly one of a workdir or a checkpoint directory."""
    if bool(workdir) == bool(checkpoint):
        raise ValueError(
            "give exactly one of a workdir (its best checkpoint) or a checkpoint directory (one step)"
        )
    if workdir:
        return Path(workdir), None
    assert checkpoint  # exactly one of the two, checked above
    path = Path(checkpoint)
    if not path.name.isdigit() or path.parent.name != "checkpoints":
        raise ValueError(
            f"{path}: a checkpoint is <workdir>/checkpoints/<step>, e.g. runs/student/checkpoints/2000"
        )
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path.parent.parent, int(path.name)


def load_trained(workdir: str | Path | None = None, checkpoint: str | Path | None = None) -> Trained:
    """The network of a training workdir: its config.json and the best (or the named) checkpoint.

    Only the parameters and BatchNorm statistics are read (not the optimizer state), as numpy arrays,
    and every shape is checked against the architecture that config.json builds.

    Args:
      workdir: A training workdir; its best checkpoint by dev CCC (or latest without scores) is used.
      checkpoint: Or one checkpoint directory, `<workdir>/checkpoints/<step>`.

    Raises:
      FileNotFoundError, ValueError: naming the file, for a missing or mismatched workdir or checkpoint.
    """
    import orbax.checkpoint as ocp

    root, step = locate(workdir, checkpoint)
    check_not_population(root, "a trained model")
    config_path = root / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} does not exist: {root} is not a pkd_jax training workdir")
    config = read_config(config_path)
    if config.data.get("window_subsequences", 0) > 0:
        raise ValueError(
            f"{config_path}: a windowed (strong-setting) model; predict runs per-frame (weak-setting) models"
        )
    model = build.build_model(config)
    checkpoints = root / "checkpoints"
    if step is None:
        if not checkpoints.is_dir():
            raise FileNotFoundError(f"no checkpoints in {root} ({checkpoints} does not exist)")
        manager = Checkpointer(checkpoints, async_save=False)
        step = manager.best_step()
        manager.close()
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {checkpoints}")
    state_dir = checkpoints / str(step) / "state"
    teacher = input_modalities(model) != ("visual",)
    abstract = jax.eval_shape(
        lambda: model.init(jax.random.key(0), *build.example_inputs(config, teacher=teacher))
    )
    abstract = {k: abstract[k] for k in ("params", "batch_stats")}
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract)
    try:
        with ocp.PyTreeCheckpointer() as reader:
            args = ocp.args.PyTreeRestore(item=abstract, restore_args=as_numpy, partial_restore=True)
            variables = reader.restore(state_dir.absolute(), args=args)
    except Exception as e:  # orbax raises several kinds for a missing or foreign checkpoint
        silence_stray_callbacks()
        raise ValueError(f"cannot read parameters from checkpoint {state_dir}: {e}") from e
    check_tree_shapes(
        abstract, variables, f"checkpoint {state_dir}", f"the {config.stage} model of {config_path}"
    )
    if isinstance(model, TeacherStudent):  # one-stage: the checkpoint holds both; the student is used
        model = build.build_student(config)
        variables = {k: v["student"] for k, v in variables.items()}
    return Trained(config, model, variables, int(step), state_dir.parent)


def load_teacher(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> tuple[Teacher, Any, str]:
    """The frozen teacher named by `config.teacher`: its model (from its own config), its variables and
    the checkpoint they came from (`<workdir>/checkpoints/<step>`, absolute)."""
    try:
        workdir, step = locate(config.teacher.workdir or None, config.teacher.checkpoint or None)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"teacher not found: {e}") from e
    check_not_population(
        workdir, "config.teacher.workdir (or train the student as a population: train.population)"
    )
    config_path = workdir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"teacher not found: {config_path} does not exist (train the teacher first)")
    teacher_config = read_config(config_path)
    if teacher_config.stage != "teacher":
        raise ValueError(f"{config_path}: stage {teacher_config.stage!r} is not a teacher")
    if tuple(teacher_config.targets) != tuple(build.target_names(config)):
        raise ValueError(
            f"{config_path}: the teacher predicts {tuple(teacher_config.targets)}, "
            f"the student {tuple(build.target_names(config))}"
        )
    if teacher_config.data.face_size != config.data.face_size:
        raise ValueError(
            f"{config_path}: the teacher was trained on {teacher_config.data.face_size}px faces, "
            f"the student is configured for {config.data.face_size}px"
        )
    if "physio" in build.teacher_modalities(teacher_config):
        theirs = (teacher_config.data.physio_window_s, teacher_config.data.physio_window_step)
        ours = (config.data.physio_window_s, config.data.physio_window_step)
        if theirs != ours:
            raise ValueError(
                f"{config_path}: the teacher read physiological windows of (seconds, step) {theirs}, the "
                f"student is configured for {ours}: set data.physio_window_s and data.physio_window_step to "
                "the teacher's"
            )
    teacher = build.build_teacher(teacher_config)
    checkpointer = Checkpointer(workdir / "checkpoints", async_save=False)
    step = checkpointer.best_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"teacher not found: no checkpoint in {workdir / 'checkpoints'}")
    # Placed straight onto this run's mesh: the teacher may have been trained on other devices.
    try:
        restored = checkpointer.restore_tree(step, sharding.replicated(mesh))
    except Exception as e:  # Orbax and TensorStore raise many kinds for a damaged checkpoint
        silence_stray_callbacks()
        others = sorted(set(checkpointer.manager.all_steps()) - {step})
        checkpointer.close()
        raise ValueError(
            f"teacher checkpoint {workdir / 'checkpoints' / str(step)} cannot be read "
            f"({short_reason(e)}); name another with config.teacher.checkpoint"
            + (f" (steps there: {others})" if others else "")
        ) from e
    variables = {"params": restored["params"], "batch_stats": restored["batch_stats"]}
    checkpointer.close()
    expected = jax.eval_shape(
        lambda: teacher.init(jax.random.key(0), *_dummy_teacher_inputs(teacher_config, variables))
    )
    check_tree_shapes(
        expected,
        variables,
        f"teacher checkpoint {workdir}/checkpoints/{step}",
        "the configured teacher architecture",
    )
    logging.info("Teacher: %s, step %d.", workdir, step)
    return teacher, sharding.replicate(variables, mesh), f"{workdir.resolve()}/checkpoints/{step}"


def _dummy_teacher_inputs(teacher_config: ml_collections.ConfigDict, variables: Any) -> tuple:
    # The audio input size is not in the config; the trunks only need the channel count to match.
    audio_cnn = variables["params"].get("audio_cnn")
    channels = audio_cnn["conv1"]["kernel"].shape[2] if audio_cnn else 1
    return build.example_inputs(teacher_config, teacher=True, audio_channels=channels)
