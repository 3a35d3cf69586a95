"""RECOLA, weak setting: the visual stage. Arguments: `released_code` (the released code's choices),
`tiny` (tiny widths for tests and CPU runs). Example:

    python -m pkd_jax.main --config=configs/recola_visual.py --workdir=runs/visual \\
        --config.data.root=/data/RECOLA
"""

from pkd_jax import defaults


def get_config(arg: str | None = None):
    return defaults.stage_config("visual", "recola", arg)
