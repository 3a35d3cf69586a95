"""The gate sweep on the demo corpus: where gamma is measured, and with which threshold (dev only).

    python -m pkd_jax.experiments.gate_sweep --config=configs/gate_sweep.py --workdir=runs/gate_sweep

The demo's training settings (`configs/demo.py`), seeds 0-2, and a grid of paper-gate students. Its
tables (`sweep.md`) are where the demo's and RECOLA's gate defaults in `pkd_jax/defaults.py` come from.
Argument `smoke`: a seconds-long version for tests.
"""

import ml_collections

from configs import demo
from pkd_jax import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = defaults.parse_args(arg, ("smoke",))
    c = demo.get_config("smoke" if "smoke" in args else None)
    c.unlock()
    e = c.experiment
    e.seeds = (0,) if "smoke" in args else (0, 1, 2)  # selection seeds (the demo's headline uses 0-4)
    e.sweep = s = ml_collections.ConfigDict()  # the sweep's own fields
    s.windows = (25, 125, 250, 750)  # gate_window_frames tabulated for the window context
    s.thetas = (0.2, 0.4, 0.6, 0.8)  # absolute thresholds tabulated (0.2: the released code's value)
    s.quantiles = (0.25, 0.5, 0.75)  # teacher-relative thresholds tabulated
    s.grid = (  # students trained per seed (all with the paper gate)
        {"context": "clip", "theta": 0.2},
        {"context": "clip", "quantile": 0.5},
        {"context": "batch", "quantile": 0.5},
        {"context": "window", "window": 25, "quantile": 0.5},
        {"context": "window", "window": 125, "quantile": 0.5},
        {"context": "window", "window": 250, "quantile": 0.5},
        {"context": "window", "window": 750, "quantile": 0.5},
        {"context": "window", "window": 250, "quantile": 0.25},
        {"context": "window", "window": 250, "quantile": 0.75},
    )
    if "smoke" in args:
        s.windows = (25,)
        s.grid = ({"context": "window", "window": 25, "quantile": 0.5},)
    c.lock()
    return c
