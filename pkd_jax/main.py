"""Train one stage of pkd_jax.

    python -m pkd_jax.main --config=configs/recola_student.py --workdir=runs/student \
        --config.data.root=/data/RECOLA --config.teacher.workdir=runs/teacher

The stage (teacher, visual baseline, student) comes from the config. Any config field can be overridden
on the command line (`--config.optim.lr_head=3e-4`); configs are locked, so a mistyped key is an error
that names it. Re-running the same command resumes from the workdir's latest checkpoint.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from pkd_jax.train import loop, sharding

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:args]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and predictions.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    sharding.maybe_initialize_distributed()
    logging.set_verbosity(logging.INFO)
    result = loop.run(_CONFIG.value, _WORKDIR.value)
    if result:
        raw = result["raw"]
        print(
            "dev CCC (raw, mean over videos):", {k: round(v, 4) for k, v in raw["mean_over_videos"].items()}
        )


if __name__ == "__main__":
    app.run(main)
