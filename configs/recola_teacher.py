"""RECOLA, weak setting: the teacher stage. Arguments: `released_code` (the released code's choices),
`tiny` (tiny widths for tests and CPU runs). Example:

    python -m pkd_jax.main --config=configs/recola_teacher.py --workdir=runs/teacher \\
        --config.data.root=/data/RECOLA
"""

from pkd_jax import defaults


def get_config(arg: str | None = None):
    return defaults.stage_config("teacher", "recola", arg)
