#!/usr/bin/env bash
# The runs behind the paired verdict (docs/results/verdict.md) for one
# experiment, on the CPU presets: Adam, AdamW, EXAdam and its constant-step
# form, each at its own tuned rate, over the same final seeds.
#
#   bash benchmarks/reproduce/verdict_runs.sh gpt
#   bash benchmarks/reproduce/verdict_runs.sh cnn DATA   # DATA holds cifar-10-batches-py/
#
# MinGPT: preset cpu-long under 5% warmup + cosine to 10% (5,000
# iterations), reusing the sweeps of benchmarks/results/cpu/cosine-gpt; the
# CNN: preset cpu-long (20 epochs, plateau schedule), reusing the sweeps of
# long-cnn and long-cnn-replica. Arms those folders did not sweep are swept
# here with their sweep seeds, in the first block. The final seeds (FIRST,
# default 3000, to FIRST + SEEDS - 1, default 10) run one seed per block,
# each block a reproduction folder of its own under
# benchmarks/results/cpu/verdict-EXPERIMENT/, so that every finished block
# can be kept while later ones run. Run the same command again to continue:
# finished blocks are skipped and an unfinished one continues from its
# checkpoints.
set -euo pipefail
cd "$(dirname "$0")/../.."

experiment=${1:?usage: verdict_runs.sh gpt|cnn [DATA]}
first=${FIRST:-3000}
seeds=${SEEDS:-10}
out=benchmarks/results/cpu/verdict-$experiment
arms=(adam adamw exadam exadam-no-dynamic-step-size)
case $experiment in
  gpt)
    options=(--preset cpu-long --schedule cosine --experiments gpt)
    reused=(benchmarks/results/cpu/cosine-gpt)
    ;;
  cnn)
    data=${2:?the CNN needs the CIFAR-10 folder: verdict_runs.sh cnn DATA}
    options=(--preset cpu-long --experiments cnn --data-dir "$data")
    reused=(benchmarks/results/cpu/long-cnn benchmarks/results/cpu/long-cnn-replica)
    ;;
  *)
    echo "error: the experiment is gpt or cnn, got '$experiment'" >&2
    exit 2
    ;;
esac

for ((seed = first; seed < first + seeds; seed++)); do
  sweeps=("${reused[@]}")
  if ((seed > first)); then
    sweeps+=("$out/seed-$first")  # the first block's sweeps of the other arms
  fi
  python -m benchmarks.reproduce "${options[@]}" --mode sweep \
    --optimizers "${arms[@]}" --sweeps-from "${sweeps[@]}" \
    --first-seed "$seed" --seeds 1 --out "$out/seed-$seed"
done
