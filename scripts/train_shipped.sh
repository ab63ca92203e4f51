#!/usr/bin/env bash
# Reproduces the shipped tiny-llada-arith (single questions and conversations) in two stages:
#
#   bash scripts/train_shipped.sh OUT_DIR [DEVICE]      # DEVICE: cuda (default) or cpu
#
# Stage 1 is the single-question model of commits 9a644b6-83c06b1 (one H100: 16,624 steps of 512
# examples, 6 min; BENCHMARKS.md `eval` history), read from git. Stage 2 (`fastdllm-ray train
# --init-from` stage 1) teaches it conversations (train/chats.py: 1-4 turns, follow-ups on the
# previous answer) beside single questions: 5,000 steps of 512 examples, 40% of them
# conversations, seed 2: 4.2 min on an H100 (57 ms a step). On a CPU the same stage runs, but
# in hours, not minutes (~1 s a step of 512 on this project's 2-core machine).
# The held-out split is fixed by construction (train/data.py, train/chats.py), whatever the seed;
# the seed fixes the data, the batches and the masks (the float sums follow the machine's kernels).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash scripts/train_shipped.sh OUT_DIR [DEVICE]}
device=${2:-cuda}
mkdir -p "$out/stage1"
for file in config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json; do
  git show "83c06b1:fastdllm_ray/assets/tiny-llada-arith/$file" > "$out/stage1/$file"
done
.venv/bin/fastdllm-ray train --model tiny-llada-arith --device "$device" --out "$out/stage2" \
  --init-from "$out/stage1" --seed 2 --steps 5000 --batch-size 512 --lr 3e-4 --min-lr 1e-5 --warmup-steps 100 \
  --chat-fraction 0.4 --num-examples 200000 --log-every 500
echo "trained: $out/stage2 (measure: .venv/bin/fastdllm-ray eval --model $out/stage2 --cache none,dual" \
  "--schedule fixed,threshold --block-lengths 32)"
