#!/usr/bin/env bash
# Trains the embedded tiny models on one GPU, side by side, then evaluates each on held-out
# problems and conversations (issue 24; the tiny v2 of issue 19):
#
#   bash scripts/train_models.sh OUT_DIR [MINUTES]
#
# Every run is `fastdllm-ray train` with the flags below (the seed fixes the data, the initial
# weights, the batches and the masks); MINUTES (default 5.5) fits each run's step count to the
# time (--max-minutes: the log prints the step count, and `--steps N` instead reproduces it).
# The held-out split is fixed by construction (train/data.py, train/chats.py), whatever the seed.
#   llada-ft      tiny-llada-arith from the shipped single-question model, on conversations too
#   llada         tiny-llada-arith from scratch
#   dream, dream-lr1e-3
#                 tiny-dream-arith from scratch (Dream's shifted objective), two learning rates
#   v2            tiny-v2-arith from scratch (Fast-dLLM v2's block-diffusion objective)
# Each OUT_DIR/NAME is a checkpoint; OUT_DIR/NAME.log its training and eval output;
# OUT_DIR/NAME-eval/ its CSVs and OUT_DIR/NAME-BENCHMARKS.md its eval section.
# STEPS=N trains N steps (MINUTES then only caps them). The shipped tiny-llada-arith is
# `STEPS=5000 RUNS=llada-ft bash scripts/train_models.sh OUT 9` run with the single-question
# model as the shipped one (scripts/train_shipped.sh does the same from git, in one command).
# RUNS="llada-ft v2" runs only those (side by side they share the GPU: each gets a share of its
# time and memory; five at once ran ~160-260 ms a step, 1,150-1,850 steps in 5 minutes).
# DEVICE=cpu with small MINUTES runs the same path on a CPU (a smoke run, not a model).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash scripts/train_models.sh OUT_DIR [MINUTES]}
minutes=${2:-5.5}
device=${DEVICE:-cuda}
python=${PYTHON:-python3}
mkdir -p "$out"
# `fastdllm-ray` from this tree, with the GPU image's python (nothing installed there)
fdr=(env PYTHONPATH=. "$python" -c 'import sys; from fastdllm_ray.cli import main; sys.exit(main(sys.argv[1:]))')
common=(--device "$device" --batch-size "${BATCH:-512}" --steps ${STEPS:-60000} --max-minutes "$minutes" --log-every 500)

train_then_eval() {  # NAME EVAL_FLAGS -- TRAIN_FLAGS
  local name=$1 eval_flags=$2; shift 3
  [[ " ${RUNS:-llada-ft llada dream dream-lr1e-3 v2} " == *" $name "* ]] || return 0
  {
    "${fdr[@]}" train --out "$out/$name" "${common[@]}" "$@" || { echo "training $name failed"; return; }
    cp BENCHMARKS.md "$out/$name-BENCHMARKS.md"
    # shellcheck disable=SC2086
    timeout "${EVAL_SECONDS:-150}" "${fdr[@]}" eval --model "$out/$name" \
      --device "$device" --dtype float32 --batch-size 256 --eager --no-progress \
      --num-problems "${PROBLEMS:-500}" --chats "${CHATS:-200}" --turns 3 \
      --out-dir "$out/$name-eval" --benchmarks "$out/$name-BENCHMARKS.md" $eval_flags || echo "eval $name: rc $?"
  } > "$out/$name.log" 2>&1
}

llada_eval="--cache none,dual --schedule fixed,threshold --block-lengths 32"
dream_eval="--cache none,dual"
train_then_eval llada-ft "$llada_eval" -- --model tiny-llada-arith --init-from tiny-llada-arith --seed 2 \
  --lr 3e-4 --min-lr 1e-5 --warmup-steps 100 --chat-fraction 0.4 &
train_then_eval llada "$llada_eval" -- --model tiny-llada-arith --seed 0 --lr 2e-3 --warmup-steps 100 &
train_then_eval dream "$dream_eval" -- --model tiny-dream-arith --seed 0 --lr 2e-3 --warmup-steps 100 &
train_then_eval dream-lr1e-3 "$dream_eval" -- --model tiny-dream-arith --seed 0 --lr 1e-3 --warmup-steps 100 &
train_then_eval v2 "" -- --model tiny-v2-arith --seed 0 --lr 2e-3 --warmup-steps 100 &
wait
for log in "$out"/*.log; do
  echo "== $log"
  grep -E "parameters|^data:|max-minutes|^trained|failed|accuracy|turn [0-9]|rc [0-9]" "$log" | tail -20
done
