#!/usr/bin/env bash
# Train one stage on this machine with all of its GPUs (one process; the batch is split over the GPUs).
#
#   launch/train_local.sh CONFIG WORKDIR [pkd_jax.main flags...]
#   launch/train_local.sh configs/recola_teacher.py runs/teacher --config.data.root=/data/RECOLA
#
# Environment:
#   PYTHON                the interpreter with pkd_jax installed (default .venv/bin/python, else python3)
#   CUDA_VISIBLE_DEVICES  the GPUs to use (default: all); config.data.batch_size, the global batch,
#                         must be a multiple of their number
#   DRY_RUN=1             print the command instead of running it
# XLA may take most of each GPU's memory up front; XLA_PYTHON_CLIENT_MEM_FRACTION=.8 or
# XLA_PYTHON_CLIENT_PREALLOCATE=false change that. Run again with the same arguments to resume.
set -euo pipefail
if (($# < 2)); then
  sed -n '2,13p' "$0" >&2
  exit 2
fi
config=$1 workdir=$2
shift 2
default_python=.venv/bin/python
[[ -x $default_python ]] || default_python=python3
python=${PYTHON:-$default_python}
cmd=("$python" -m pkd_jax.main --config="$config" --workdir="$workdir" "$@")
if [[ ${DRY_RUN:-0} == 1 ]]; then
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
if command -v nvidia-smi >/dev/null; then
  echo "GPUs: $(nvidia-smi -L | wc -l) on this host (CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-all})"
fi
mkdir -p "$workdir"
exec "${cmd[@]}"
