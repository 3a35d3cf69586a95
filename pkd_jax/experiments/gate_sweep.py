"""Choosing the gate on dev: distilled share and student dev CCC over gate contexts and thresholds.

    python -m pkd_jax.experiments.gate_sweep --config=configs/gate_sweep.py --workdir=runs/gate_sweep

For every seed of `experiment.seeds` it trains (or reuses) the teacher and the visual baseline in the
paper runner's layout (`<workdir>/runs/<method>/seed_<k>`), then

1. tabulates, from each trained teacher alone, the share of training clips the paper gate would
   distil in each gate context and threshold: "clip" (the teacher's own clip predictions, as the
   cached teacher gives them), "window" with each W of `sweep.windows` (its per-frame track),
   and "batch" (CCC over `data.batch_size` clips drawn as the pipeline draws them, simulated);
   thresholds are absolute (`sweep.thetas`) or quantiles of the teacher's gamma (`sweep.quantiles`);
2. trains a student for each entry of `sweep.grid` and seed, and reports its dev CCC, the share it
   actually distilled, and its paired difference from the baseline of the same seed (95% t-interval).

Only dev is used: this is where the demo's and RECOLA's gate defaults come from. Writes `sweep.json`
and `sweep.md` to the workdir, and every log line to `<workdir>/log.txt` (`--verbose`: to the console too).
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from pkd_jax import console
from pkd_jax.experiments.sweep import run_sweep


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    console.setup(verbose=flags.FLAGS.verbose)
    console.log_to(Path(flags.FLAGS.workdir) / "log.txt")
    run_sweep(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", None, "Sweep config (configs/gate_sweep.py).")
    flags.DEFINE_string("workdir", None, "Directory for the corpus, cache, runs and the sweep tables.")
    flags.DEFINE_bool("verbose", False, "Also show every library's log lines (orbax, jax) on the console.")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
