#!/usr/bin/env bash
# The paper's experiments (every method x seed, then tables and figures) with pkd_jax.experiments.paper.
#
#   launch/paper.sh [CONFIG [WORKDIR [flags...]]]
#   launch/paper.sh                                      # configs/demo.py -> runs/demo (synthetic, CPU)
#   launch/paper.sh configs/recola_paper.py runs/recola --config.data.root=/data/RECOLA
#
# Environment:
#   PYTHON                the interpreter with pkd_jax installed (default .venv/bin/python, else python3)
#   CUDA_VISIBLE_DEVICES  the GPUs each training run uses (default: all)
#   DRY_RUN=1             print the command instead of running it
# Runs are trained one after another in one process; started again, it reuses finished runs and resumes
# unfinished ones. Outputs: WORKDIR/results.md, results.json, figure4.png, training_curves.png.
set -euo pipefail
config=${1:-configs/demo.py}
workdir=${2:-runs/demo}
shift $(($# >= 2 ? 2 : $#))
default_python=.venv/bin/python
[[ -x $default_python ]] || default_python=python3
python=${PYTHON:-$default_python}
cmd=("$python" -m pkd_jax.experiments.paper --config="$config" --workdir="$workdir" "$@")
if [[ ${DRY_RUN:-0} == 1 ]]; then
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
mkdir -p "$workdir"
"${cmd[@]}"
echo "tables: $workdir/results.md   figures: $workdir/figure4.png $workdir/training_curves.png"
