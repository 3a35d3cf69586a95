#!/usr/bin/env bash
# Profile the train steps of a config with XLA's tools: a jax.profiler trace (XProf / TensorBoard) and the
# optimized HLO, plus the timing table and the operations of most self time per step.
#   launch/profile.sh configs/recola_student.py [OUT_DIR] [extra bench flags...]
#   launch/profile.sh configs/recola_student.py:tiny runs/profile --kinds=student_cached --steps=3
# It ends by printing where the summary is and the command that opens the trace in the XProf viewer
# (pip install -e '.[profile]'; see docs/profiling.md). PYTHON: the interpreter (default .venv/bin/python).
set -euo pipefail
config=${1:?usage: launch/profile.sh CONFIG [OUT_DIR] [bench flags...]}
out=${2:-runs/profile}
shift $(( $# >= 2 ? 2 : 1 ))
python=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
"$python" -m pkd_jax.bench --config="$config" --steps=5 --warmup=2 \
  --profile_dir="$out/trace" --dump_hlo="$out/hlo" "$@" | tee "$out/timings.txt"

[[ -d "$out/trace" ]] || { echo "the bench wrote no trace under $out/trace" >&2; exit 1; }
trace=$(cd "$out/trace" && pwd)
# The viewer of the same environment as the bench, else the one on PATH.
viewer="$(cd "$(dirname "$python")" && pwd)/xprof"
[[ -x "$viewer" ]] || viewer=$(command -v xprof || true)
echo
echo "summary: $out/timings.txt (step times and MFU, then the operations of most self time per step)"
echo "trace:   $trace (one run per step kind)   HLO: $out/hlo"
if [[ -n "$viewer" ]]; then
  echo "open:    $(printf '%q' "$viewer") --logdir=$(printf '%q' "$trace") --port=8791   # then http://localhost:8791/"
else
  echo "open:    xprof --logdir=$(printf '%q' "$trace") --port=8791   # after: pip install -e '.[profile]'"
fi
