"""RECOLA, weak setting: the student stage. Arguments: `released_code` (the released code's choices),
`tiny` (tiny widths for tests and CPU runs). Example:

    python -m pkd_jax.main --config=configs/recola_student.py --workdir=runs/student \\
        --config.data.root=/data/RECOLA
"""

from pkd_jax import defaults


def get_config(arg: str | None = None):
    return defaults.stage_config("student", "recola", arg)
