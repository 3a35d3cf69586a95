"""Aff-Wild2, strong setting (paper Table 6): the student stage. Argument: `tiny` (tiny widths and
windows for tests and CPU runs). Example:

    python -m pkd_jax.main --config=configs/affwild2_student.py --workdir=runs/affwild2_student \\
        --config.data.root=/data/Aff-Wild2 --config.teacher.workdir=runs/affwild2_teacher
"""

from pkd_jax import defaults


def get_config(arg: str | None = None):
    return defaults.affwild2_stage_config("student", arg)
