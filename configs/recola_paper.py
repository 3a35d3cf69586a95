"""The paper runner on RECOLA at full size: every method of Tables 1, 4 and 5 over 3 seeds.

    python -m pkd_jax.experiments.paper --config=configs/recola_paper.py --workdir=runs/recola \\
        --config.data.root=/data/RECOLA

Argument `released_code` switches to the released code's choices, as for the stage configs.
"""

import ml_collections

from pkd_jax import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = defaults.parse_args(arg, ("released_code",))
    c = defaults.get_config("teacher", "recola")
    if "released_code" in args:
        defaults.apply_released_code(c)
    c.experiment = defaults.experiment_fields()
    c.lock()
    return c
