#!/usr/bin/env bash
# Profile the train steps of a config with XLA's tools: a jax.profiler trace (TensorBoard / XProf) and the
# optimized HLO, plus the timing table.
#   launch/profile.sh configs/recola_student.py [OUT_DIR] [extra bench flags...]
# View: tensorboard --logdir OUT_DIR/trace  (install tensorboard-plugin-profile for the profile tab)
set -euo pipefail
config=${1:?usage: launch/profile.sh CONFIG [OUT_DIR] [bench flags...]}
out=${2:-runs/profile}
shift $(( $# >= 2 ? 2 : 1 ))
python=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
"$python" -m pkd_jax.bench --config="$config" --steps=5 --warmup=2 \
  --profile_dir="$out/trace" --dump_hlo="$out/hlo" "$@" | tee "$out/timings.txt"
echo "trace: $out/trace   HLO: $out/hlo   timings: $out/timings.txt"
