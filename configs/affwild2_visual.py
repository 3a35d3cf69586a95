"""Aff-Wild2, strong setting (paper Table 6): the visual stage. Argument: `tiny` (tiny widths and
windows for tests and CPU runs). Example:

    python -m pkd_jax.main --config=configs/affwild2_visual.py --workdir=runs/affwild2_visual \\
        --config.data.root=/data/Aff-Wild2
"""

from pkd_jax import defaults


def get_config(arg: str | None = None):
    return defaults.affwild2_stage_config("visual", arg)
