"""Train one stage of pkd_jax.

    python -m pkd_jax.main --config=configs/recola_student.py --workdir=runs/student \
        --config.data.root=/data/RECOLA --config.teacher.workdir=runs/teacher

The stage (teacher, visual baseline, student) comes from the config. Any config field can be overridden
on the command line (`--config.optim.lr_head=3e-4`); configs are locked, so a mistyped key is an error
that names it. Re-running the same command resumes from the workdir's latest checkpoint; a resume with
changed data, loss or optimizer fields is refused (listing them) unless `--allow_config_change` is given,
and then recorded in `<workdir>/config_amendments.jsonl` (docs/workdirs.md). A mistake in the config,
data or workdir ends with one line naming it and exit status 1; `--verbose` shows the traceback. The
console shows progress, one line per evaluation and warnings; everything logged, libraries' INFO lines
too, is appended to `<workdir>/log.txt` (`log.<k>.txt` for process k > 0), and `--verbose` shows it.

Many processes (hosts, or GPUs) train one model together when the flags below or the environment
describe the job: `--coordinator_address=host0:1234 --num_processes=N --process_id=i` on every process,
or `JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID`, or nothing at all inside a
SLURM `srun` step (see `launch/train_slurm.sbatch`). All processes use the same config and workdir.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from pkd_jax import console
from pkd_jax.train import cpu_flags, sharding

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:args]).")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics and predictions.", required=True
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    None,
    f"Multi-process: host:port of process 0 (default ${sharding.ENV_COORDINATOR}).",
)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, f"Multi-process: number of processes (default ${sharding.ENV_NUM_PROCESSES})."
)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, f"Multi-process: this process's index (default ${sharding.ENV_PROCESS_ID})."
)
_LOCAL_DEVICES = flags.DEFINE_list(
    "local_device_ids", None, "Multi-process: the local devices this process drives (default: all, or "
    "one per task inside srun; also $JAX_LOCAL_DEVICE_IDS)."
)  # fmt: skip
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume although data, loss or optimizer fields differ from the "
    "workdir's config; the changes are recorded in config_amendments.jsonl from the resumed step."
)  # fmt: skip
_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "Show the traceback of an error, not only its message, and every library's log "
    "lines (orbax, jax), which otherwise go only to <workdir>/log.txt."
)  # fmt: skip
flags.mark_flags_as_required(["config"])  # and workdir, above


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    console.setup(verbose=_VERBOSE.value)
    cpu_flags.apply_cpu_flags(_CONFIG.value.model.dtype)  # before JAX starts a backend
    sharding.maybe_initialize_distributed(
        coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value,
        process_id=_PROCESS_ID.value,
        local_device_ids=[int(i) for i in _LOCAL_DEVICES.value] if _LOCAL_DEVICES.value else None,
    )
    chief = sharding.is_chief()
    log = console.log_to(Path(_WORKDIR.value) / ("log.txt" if chief else f"log.{jax.process_index()}.txt"))
    if not chief:
        # tqdm reads its TQDM_* defaults when first imported, below: no progress bars but process 0's.
        os.environ.setdefault("TQDM_DISABLE", "1")
    from pkd_jax.train import loop

    result = loop.run(_CONFIG.value, _WORKDIR.value, allow_config_change=_ALLOW_CHANGE.value)
    if result and chief:
        for member in result.get("members", [result]):
            scores = member["raw"]["mean_over_videos"]
            print("dev CCC (raw, mean over videos):", {k: round(v, 4) for k, v in scores.items()})
        print(f"outputs in {_WORKDIR.value}, log in {log}")


def cli(argv: list[str]) -> None:
    """`main` for the command line: a user's mistake is one line on stderr and exit status 1."""
    from pkd_jax.workdir.checkpoints import CheckpointDamagedError
    from pkd_jax.workdir.lock import WorkdirInUseError

    try:
        main(argv)
    except (ValueError, OSError, FloatingPointError, WorkdirInUseError, CheckpointDamagedError) as e:
        logging.error("error: %s", e, exc_info=True, extra=console.FILE_ONLY)  # the log keeps the traceback
        if _VERBOSE.value:
            raise
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    app.run(cli)
