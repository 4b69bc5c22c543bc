#!/usr/bin/env bash
# The benchmarks on one GPU in about ten minutes of wall time:
#
#   bash benchmarks/gpu/run.sh OUT_DIR
#
# 1. checks that the installed jax/flax/optax run the code (fails early);
# 2. writes CIFAR-10 from the JPEG pack into a scratch data folder (tiny
#    Shakespeare ships with the examples);
# 3. the step-cost benchmark (python -m benchmarks.step_cost, about a minute);
# 4. the paper's MinGPT at tuned rates (python -m benchmarks.reproduce
#    --preset paper-tuned --mode sweep): EXAdam and AdamW at three rates
#    each, around the rates the CPU sweeps selected, then the selected rate
#    of each with fresh seeds; half the time left, a third per stage;
# 5. the paper's own protocol, every optimizer at lr 1e-4, for both
#    experiments (--preset paper --mode compare --auto-seeds): each
#    experiment gets half the time left; one run is timed first and up to 3
#    seeds are kept if they fit.
#    In both, all runs of a stage advance interval by interval (or epoch by
#    epoch) together, so if time runs out they stop at the same point, and
#    the tables say so.
#
# OUT_DIR receives at most 8 files (the device tool's limit): run.log,
# tuned.md and tables.md (the two reproductions' tables), step_cost.md and
# results.tar.gz with every file of the run (metrics JSON lines,
# run_info.json, figures, step-cost JSON). The tarball is rebuilt after each
# phase, so a run stopped from outside keeps what was done.
#
# Environment variables:
#   EXADAM_GPU_DATA    offline data (default .device/data, see stage_data.sh):
#                      the CIFAR-10 JPEG pack and its script, or a folder that
#                      already holds cifar-10-batches-py
#   EXADAM_GPU_WORK    scratch folder for data and results (default
#                      $TMPDIR/exadam_gpu, or /tmp/exadam_gpu)
#   EXADAM_GPU_BUDGET  seconds for the whole script (default 560)
#   EXADAM_GPU_SMOKE   1: a short dry run of the same wiring (smoke preset
#                      with EXAdam and Adam, small step-cost trees; runs on
#                      a CPU too)
#   PYTHON             the interpreter (default: python on PATH)
set -euo pipefail
out=${1:?usage: bash benchmarks/gpu/run.sh OUT_DIR}
data_source=${EXADAM_GPU_DATA:-.device/data}
work=${EXADAM_GPU_WORK:-${TMPDIR:-/tmp}/exadam_gpu}
budget=${EXADAM_GPU_BUDGET:-560}
smoke=${EXADAM_GPU_SMOKE:-0}
python=${PYTHON:-python}
export PYTHONUNBUFFERED=1

mkdir -p "$out" "$work/results"
exec > >(tee -a "$out/run.log") 2>&1
start=$SECONDS
left() { echo $((budget - (SECONDS - start))); }
pack() {
  cp -f "$work/results/tuned/tables.md" "$out/tuned.md" 2>/dev/null || true
  cp -f "$work/results/reproduce/tables.md" "$out/tables.md" 2>/dev/null || true
  cp -f "$work"/results/step_cost/step_cost_*.md "$out/step_cost.md" 2>/dev/null || true
  tar -czf "$out/results.tar.gz.tmp" -C "$work" results
  mv -f "$out/results.tar.gz.tmp" "$out/results.tar.gz"
}

if [[ "$smoke" == 1 ]]; then
  preset=smoke
  step_cost_args=(--sizes 1e4 --models cnn mingpt --model-preset tiny
    --seconds 0.2 --min-rounds 3 --max-rounds 5)
  reproduce_args=(--optimizers exadam adam)
  tuned_args=(--preset smoke --optimizers exadam adam)
  require_gpu=()
else
  preset=paper
  step_cost_args=(--sizes 1e6 1e7 1e8 1e9)
  reproduce_args=()
  tuned_args=(--preset paper-tuned --optimizers exadam adamw)
  require_gpu=(--require-gpu)
fi

echo "== environment ($(date -u +%FT%TZ), budget ${budget} s, preset $preset)"
"$python" -m benchmarks.gpu.check_env "${require_gpu[@]}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true

echo "== data ($((SECONDS - start)) s)"
if [[ -f "$data_source/cifar-10-batches-py/test_batch" ]]; then
  data_dir=$data_source
else
  for file in cifar10_jpeg_pack.npz make_cifar10_batches.py; do
    if [[ ! -f "$data_source/$file" ]]; then
      echo "error: $data_source/$file is missing: run bash benchmarks/gpu/stage_data.sh" \
        "here and pass carry=[\".device/data\"] (or set EXADAM_GPU_DATA)." >&2
      exit 1
    fi
  done
  data_dir=$work/data
  if [[ ! -f "$data_dir/cifar-10-batches-py/test_batch" ]]; then
    "$python" "$data_source/make_cifar10_batches.py" "$data_dir" \
      "$data_source/cifar10_jpeg_pack.npz"
  fi
fi

echo "== step cost ($((SECONDS - start)) s)"
if ! timeout --signal=TERM 180 "$python" -m benchmarks.step_cost \
  "${step_cost_args[@]}" --out "$work/results/step_cost"; then
  echo "step cost benchmark failed or timed out; continuing"
fi
pack

# Runs a reproduction for at most $1 seconds into $2; the report is rebuilt
# from what was written if it stopped early.
reproduce() {
  local seconds=$1 folder=$2 status=0
  shift 2
  rm -rf "$folder"
  timeout --signal=TERM "$seconds" "$python" -m benchmarks.reproduce \
    --data-dir "$data_dir" --out "$folder" "$@" || status=$?
  if (( status != 0 )); then
    echo "reproduce exited with status $status; rebuilding the report from what was written"
    "$python" -m benchmarks.reproduce --report-only --out "$folder" || true
  fi
  return "$status"
}

echo "== MinGPT at tuned rates ($((SECONDS - start)) s)"
# Half the time left; each stage (sweep, a possible grid extension, the
# final seeds) gets a third of it, less 20 s for start-up and the report.
tuned=$(( $(left) / 2 ))
status=0
reproduce "$tuned" "$work/results/tuned" "${tuned_args[@]}" --mode sweep \
  --experiments gpt --sweep-seeds 1 --seeds 2 \
  --time-budget $(( (tuned - 20) / 3 )) || status=$?
pack

echo "== the paper's protocol, lr 1e-4 ($((SECONDS - start)) s)"
# Leave 40 s for start-up, data loading and the report; halve the rest.
per_experiment=$(( ($(left) - 40) / 2 ))
if (( per_experiment < 30 )); then
  echo "error: only $(left) s left for the reproduction; raise EXADAM_GPU_BUDGET." >&2
  exit 1
fi
reproduce "$(left)" "$work/results/reproduce" --preset "$preset" \
  --mode compare --seeds 3 --auto-seeds --time-budget "$per_experiment" \
  "${reproduce_args[@]}" || status=$?
pack
echo "== done in $((SECONDS - start)) s; files in $out"
exit "$status"
