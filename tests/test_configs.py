"""Configs: arguments, locking, and a one-line comment on every field."""

import re
from pathlib import Path

import pytest

from configs import demo, recola_student, recola_teacher, recola_visual
from pkd_jax import defaults


def test_stage_files_and_released_code_argument():
    assert [m.get_config().stage for m in (recola_teacher, recola_visual, recola_student)] == [
        "teacher", "visual", "student",
    ]  # fmt: skip
    paper, released = recola_student.get_config(), recola_student.get_config("released_code")
    assert (paper.loss.gate, paper.model.activation, paper.optim.lr_visual_cnn) == ("paper", "relu", 1e-6)
    assert (released.loss.gate, released.model.activation, released.optim.lr_visual_cnn) == (
        "released_code", "none", 1e-5,
    )  # fmt: skip
    assert released.loss.distill == "flattened_cosine" and released.data.clip_frames == 5


def test_configs_are_locked_and_arguments_checked():
    config = recola_visual.get_config("tiny")
    with pytest.raises(AttributeError):
        config.optim.lr_hed = 1.0
    with pytest.raises(ValueError, match="unknown config argument"):
        recola_teacher.get_config("fast")
    assert demo.get_config("smoke").experiment.seeds == (0,)


def test_every_config_field_has_a_comment():
    source = (Path(defaults.__file__)).read_text()
    inside_get_config = source[source.index("def get_config") : source.index("def apply_released_code")]
    assignments = [line for line in inside_get_config.splitlines() if re.match(r"\s+\w+\.\w+ = ", line)]
    assert len(assignments) > 40
    uncommented = [line.strip() for line in assignments if "#" not in line]
    assert not uncommented, uncommented


def test_demo_frozen_option_freezes_the_visual_trunk_of_every_stage():
    for args in ("frozen", "distill,frozen", "smoke,distill,frozen", "strong,frozen"):
        c = demo.get_config(args)
        assert (
            c.model.freeze_visual_cnn and c.model.frozen_features == "cached" and not c.model.freeze_audio_cnn
        )
    assert not demo.get_config("distill").model.freeze_visual_cnn
    assert "student_pkdot" in demo.get_config("distill,frozen").experiment.methods
