#!/usr/bin/env bash
# One prepared check of a freshly lent GPU machine, in under 8 minutes, into one JSON file:
#   launch/gpu_check.sh [--cpu] [OUT_DIR]        (OUT_DIR: default ${OUT:-runs/gpu_check})
# Parts, each under a time limit, a failed one recorded and the rest still run: the backend (and, when JAX
# sees no GPU, `pip install -e '.[cuda12]'`), the devices and versions, a GPU-relevant subset of the tests,
# the train-step bench of every kind of pkd_jax.perf.train_step.KINDS (at run time) at 8 and 64 clips in
# bfloat16 and float32 with MFU against the data-sheet peak, a short profile with its top operations,
# MTCNN face detection's frames/s (pkd_jax.perf.detector_bench, 320x240 frames, 16 and 64 per call), and
# seeds per hour of populations (pkd_jax.perf.population_bench: the demo's cached student, S = 1, 16 and 64
# seeds in one vmapped program against seeds one after another, compiles included, no PyTorch side).
# Result: OUT_DIR/gpu_check.json (plus OUT_DIR/logs/); the exit status is non-zero when any part failed.
# --cpu: the same on the CPU (JAX_PLATFORMS=cpu), tiny config and small batches, in about 2-3 minutes.
# Environment: PYTHON (default .venv/bin/python); GPU_CHECK_BUDGET_S (total seconds, default 440 on GPU);
# GPU_CHECK_TESTS (pytest arguments); GPU_CHECK_CONFIG (the bench's config); GPU_CHECK_SETTINGS (clips:dtype
# pairs in running order, "64:bfloat16 8:float32 ..."); GPU_CHECK_PROFILE_KIND (default student_cached);
# GPU_CHECK_SCRATCH (trace and JAX compilation cache, default ${TMPDIR:-/tmp}/pkd_jax_gpu_check, kept out of
# OUT_DIR); GPU_CHECK_CACHE (the compilation cache directory; the timed runs and the profile reuse the steps
# compiled before them); GPU_CHECK_WARMUP=0 (no background compiles of the bench settings during the tests).
set -euo pipefail
mode=gpu
if [[ ${1:-} == --cpu ]]; then mode=cpu; shift; fi
[[ ${1:-} != -* && $# -le 1 ]] || { echo "usage: launch/gpu_check.sh [--cpu] [OUT_DIR]" >&2; exit 2; }
out=${1:-${OUT:-runs/gpu_check}}
python=${PYTHON:-.venv/bin/python}
# Paths given relative to the caller's directory, then work from the repository root (tests/, configs/).
mkdir -p "$out" && out=$(cd "$out" && pwd)
[[ $python != */* || ! -e $python ]] || python=$(cd "$(dirname "$python")" && pwd)/$(basename "$python")
cd "$(dirname "$0")/.."
logs=$out/logs
scratch=${GPU_CHECK_SCRATCH:-${TMPDIR:-/tmp}/pkd_jax_gpu_check}
cache=${GPU_CHECK_CACHE:-$scratch/jax_cache}
rm -rf "$logs" "$out/gpu_check.json" "$scratch/trace"
mkdir -p "$logs" "$scratch" "$cache"

if [[ $mode == gpu ]]; then
  budget=${GPU_CHECK_BUDGET_S:-440}  # 290 s, and 150 s for the population part
  config=${GPU_CHECK_CONFIG:-configs/recola_student.py}
  steps=(--steps=5 --warmup=2)
  profile_steps=(--steps=3 --warmup=1)
  tests=(tests/test_conv.py tests/test_models.py tests/test_bench.py::test_bench_strong_setting_windows)
  cap_tests=150 cap_warm=170 cap_bench=90 cap_profile=45 cap_mtcnn=60 cap_population=150
  mtcnn_flags=(--batches=16,64 --steps=5)
  population_flags=(--config=configs/demo.py --population=1,16,64 --seed_steps=100 --rounds=1)
  unset JAX_PLATFORMS
  # XLA:CPU flags never go to a GPU run: drop any the environment brought.
  kept=() removed=()
  for flag in ${XLA_FLAGS:-}; do
    if [[ $flag == --xla_cpu_* || $flag == --xla_force_host_platform_device_count* ]]; then
      removed+=("$flag")
    else
      kept+=("$flag")
    fi
  done
  if ((${#kept[@]})); then export XLA_FLAGS="${kept[*]}"; else unset XLA_FLAGS; fi
else
  budget=${GPU_CHECK_BUDGET_S:-460}  # 400 s, and 60 s for the population part
  config=${GPU_CHECK_CONFIG:-configs/recola_student.py:tiny}
  steps=(--steps=2 --warmup=1)
  profile_steps=(--steps=1 --warmup=1)
  tests=(tests/test_models.py::test_bf16_compute_keeps_float32_params
    tests/test_conv.py::test_max_pool_2x2_matches_reduce_window)
  cap_tests=120 cap_warm=0 cap_bench=200 cap_profile=90 cap_mtcnn=60 cap_population=60
  mtcnn_flags=(--height=128 --width=128 --batches=16 --steps=1)  # the detector tests' program
  # The frozen-trunk student compiles in seconds (no VGG19); two members exercise the vmapped program.
  # No PyTorch arm: its reference networks have no frozen trunks.
  population_flags=(--config="$config" --kinds=student_frozen --population=2 --seed_steps=2 --rounds=1
    --sequential_seeds=2)
  export JAX_PLATFORMS=cpu
  removed=()
fi
[[ -z ${GPU_CHECK_TESTS:-} ]] || read -r -a tests <<<"$GPU_CHECK_TESTS"
export JAX_COMPILATION_CACHE_DIR=$cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0 TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-1}

now_ms() {
  local t=${EPOCHREALTIME:-}
  if [[ -n $t ]]; then echo $(( 10#${t/[.,]/} / 1000 )); else echo $(( $(date +%s%N) / 1000000 )); fi
}
seconds() { printf '%d.%03d' $(( $1 / 1000 )) $(( $1 % 1000 )); }
start_ms=$(now_ms)
deadline_ms=$(( start_ms + budget * 1000 ))
reserve_s=10    # kept for writing the JSON
{
  printf 'mode\t%s\ndate\t%s\nout_dir\t%s\npython\t%s\nconfig\t%s\nbudget_s\t%s\n' "$mode" \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$out" "$python" "$config" "$budget"
  printf 'tests\t%s\nxla_flags\t%s\nremoved_xla_flags\t%s\n' "${tests[*]}" "${XLA_FLAGS:-}" "${removed[*]}"
  printf 'compile_cache\t%s\ncompile_cache_entries_before\t%s\n' "$cache" "$(find "$cache" -type f | wc -l)"
  printf 'host\t%s\ncpus\t%s\nstart_epoch_s\t%s\n' "$(hostname)" "$(nproc 2>/dev/null || echo '?')" \
    "$(seconds "$start_ms")"
} >"$logs/meta.tsv"

# record NAME STATUS RC WALL_MS LIMIT_S NOTE: one row of parts.tsv and one line on the console.
record() {
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$(seconds "$4")" "$5" "${6//$'\t'/ }" >>"$logs/parts.tsv"
  echo "[gpu_check] $1: $2${3:+ (exit $3)} in $(seconds "$4") s${5:+ of $5}${6:+ -- $6}"
}

# part NAME CAP_S CMD...: CMD under min(CAP_S, what the budget leaves), stdout to logs/NAME.out, stderr to
# logs/NAME.err; sets part_status. A part the budget has no room for is skipped (and fails the check).
part() {
  local name=$1 cap=$2 rc=0 t0 wall; shift 2
  local left=$(( (deadline_ms - $(now_ms)) / 1000 - reserve_s ))
  if (( left < 10 )); then
    part_status=skipped; record "$name" skipped "" 0 "" "no time left in the ${budget} s budget"; return 0
  fi
  local limit=$(( cap < left ? cap : left ))
  t0=$(now_ms)
  timeout -k 10 "$limit" "$@" >"$logs/$name.out" 2>"$logs/$name.err" </dev/null || rc=$?
  wall=$(( $(now_ms) - t0 ))
  case $rc in 0) part_status=ok ;; 124|137) part_status=timeout ;; *) part_status=failed ;; esac
  record "$name" "$part_status" "$rc" "$wall" "$limit" ""
  if [[ $part_status != ok ]]; then tail -n 6 "$logs/$name.out" "$logs/$name.err" 2>/dev/null | sed 's/^/    /'; fi
}

echo "[gpu_check] $mode check into $out (budget ${budget} s, python $python)"
if [[ ! -x $python ]] && ! command -v "$python" >/dev/null; then
  echo "[gpu_check] no interpreter $python (set PYTHON)" >&2
  printf '{"check": "pkd_jax launch/gpu_check.sh", "ok": false, "error": "no interpreter %s"}\n' "$python" \
    >"$out/gpu_check.json"
  exit 1
fi

probe=(-c 'import jax; print(jax.default_backend())')
gpu_ok=1 backend=cpu
if [[ $mode == gpu ]]; then
  part backend 120 "$python" "${probe[@]}"
  backend=$(tail -n 1 "$logs/backend.out" 2>/dev/null || true)
fi
if [[ $mode == gpu && $backend != gpu ]]; then
  if "$python" -m pip --version >/dev/null 2>&1; then
    install=("$python" -m pip install --retries 1 --timeout 15 -e '.[cuda12]')
  else
    install=("$(dirname "$python")/uv" pip install --python "$python" -e '.[cuda12]')
  fi
  deadline_ms=$(( deadline_ms + 240000 ))  # the install does not count against the check's budget
  part install 240 "${install[@]}"
  part backend_after_install 120 "$python" "${probe[@]}"
  backend=$(tail -n 1 "$logs/backend_after_install.out" 2>/dev/null || true)
  if [[ $backend != gpu ]]; then
    gpu_ok=0
    echo "[gpu_check] JAX sees no GPU (backend: ${backend:-none}) and installing the cuda12 extra" \
      "(${install[*]}) did not help; see $logs/install.err. Without network, install jax[cuda12] from local" \
      "wheels into $python's environment, or run launch/gpu_check.sh --cpu." >&2
  fi
else
  why="jax already sees a GPU"; [[ $mode == gpu ]] || why="a --cpu run"
  record install not_needed "" 0 "" "$why"
fi

helper=(-c 'import sys; from pkd_jax.perf import gpu_check as g; sys.exit(g.cli(sys.argv[1:]))')
part devices 120 "$python" "${helper[@]}" setup "$logs" "$mode" "${GPU_CHECK_SETTINGS:-}" \
  "${GPU_CHECK_PROFILE_KIND:-}"
show='import json, sys; d = json.load(open(sys.argv[1])); v = d["versions"]
print("  backend", d["backend"], "|", ", ".join(x["device_kind"] for x in d["devices"]), "|", d["nvidia_smi_L"])
print("  python", v["python"], "jax", v.get("jax"), "jaxlib", v.get("jaxlib"), "flax", v.get("flax"))'
[[ -f $logs/devices.json ]] && "$python" -c "$show" "$logs/devices.json" || true

bench_flags() {  # bench_flags BATCH DTYPE KINDS: the bench's flags for one setting
  flags=(--config="$config" --what=train --kinds="$3" --json --config.data.batch_size="$1"
    --config.model.dtype="$2")
}
if ((gpu_ok)); then
  plan=()
  [[ -f $logs/plan.tsv ]] && mapfile -t plan <"$logs/plan.tsv"
  # On a GPU, every bench setting compiles in the background while the tests run (one process each, on the
  # host's cores, into the compilation cache: its lines keep the cold compile times); the timed runs after
  # them then load their steps from the cache, and run alone on the GPU. JAX preallocates no GPU memory in
  # these processes, nor in pytest (its bench test starts another JAX process).
  warm=()
  if [[ $mode == gpu && ${GPU_CHECK_WARMUP:-1} != 0 ]]; then
    for row in "${plan[@]}"; do
      IFS=$'\t' read -r tag batch dtype kinds <<<"$row"
      [[ $tag == bench ]] || continue
      bench_flags "$batch" "$dtype" "$kinds"
      part "compile_b${batch}_${dtype}" "$cap_warm" env XLA_PYTHON_CLIENT_PREALLOCATE=false \
        "$python" -m pkd_jax.bench "${flags[@]}" --steps=1 --warmup=0 &
      warm+=($!)
    done
  fi
  part tests "$cap_tests" env XLA_PYTHON_CLIENT_PREALLOCATE=false "$python" -m pytest -v -p no:cacheprovider \
    --junitxml="$logs/tests.xml" "${tests[@]}"
  printf '  %s\n' "$(tail -n 1 "$logs/tests.out" 2>/dev/null)"
  for pid in "${warm[@]}"; do wait "$pid" || true; done
  for row in "${plan[@]}"; do
    IFS=$'\t' read -r tag batch dtype kinds <<<"$row"
    bench_flags "$batch" "$dtype" "$kinds"
    if [[ $tag == bench ]]; then
      part "bench_b${batch}_${dtype}" "$cap_bench" "$python" -m pkd_jax.bench "${flags[@]}" "${steps[@]}"
    else
      part "profile_b${batch}_${dtype}" "$cap_profile" "$python" -m pkd_jax.bench "${flags[@]}" \
        "${profile_steps[@]}" --profile_dir="$scratch/trace" --top_ops=15
    fi
  done
  # MTCNN face detection (pkd_jax.detect): the full cascade and the tracking step, frames/s.
  part mtcnn "$cap_mtcnn" "$python" -m pkd_jax.perf.detector_bench --json "${mtcnn_flags[@]}"
  # Seeds per hour: S seeds in one vmapped program against seeds in a row; it compiles every arm itself
  # (the bench switches JAX's compilation cache off).
  part population "$cap_population" "$python" -m pkd_jax.bench --what=population --json --notorch \
    "${population_flags[@]}"
else
  for name in tests bench profile mtcnn population; do record "$name" skipped "" 0 "" "JAX sees no GPU"; done
fi

rc=0
"$python" "${helper[@]}" assemble "$out" || rc=$?
if [[ ! -s $out/gpu_check.json ]]; then
  printf '{"check": "pkd_jax launch/gpu_check.sh", "ok": false, "error": "no report could be assembled"}\n' \
    >"$out/gpu_check.json"
  rc=1
fi
echo "[gpu_check] $(seconds $(( $(now_ms) - start_ms ))) s in all; report: $out/gpu_check.json"
exit "$rc"
