#!/usr/bin/env bash
# The GPU measurements of the block-diffusion families, in stages small enough for one device
# call: `bash benchmarks/gpu_session.sh STAGE[:SECONDS]...`, run from the repo root on the GPU
# machine. Each stage prints its table last and writes its files under $OUT (or out/); with
# :SECONDS it is stopped after that long (what it printed so far stays).
#   tests     CUDA tests: paged attention (block-causal rows), the graphed engine on the new families' vectors
#   v2        Fast-dLLM v2 7B shape: block steps at batch 1 and 32, block cache, block vs decode step
#   llada2    LLaDA2.0-mini shape: steps at batch 1 and 32, and its MoE layer's grouped GEMMs
#   traffic   the traffic benchmark with v2 requests (arrivals vs the static batch)
#   traffic-llada2  the same with LLaDA2.0 requests
#   prefix    prefix sharing: a shared system prompt, 4-turn chats and plain traffic, on and off
#   canvas    LLaDA-8B and Dream-7B block steps at batch 1 and 32 (the families before this change)
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=.
out=${OUT:-out}
mkdir -p "$out"

run_stage() {
  case $1 in
    tests) python3 -m pytest -q -x -p no:cacheprovider tests/model/test_paged_attention.py \
             tests/engine/test_cuda_v2_engine.py tests/engine/test_cuda_llada2_engine.py 2>&1 | tail -15 ;;
    v2) python3 benchmarks/gpu.py --budget 4 --shape fast-dllm-v2-7b --agreement "" --out-dir "$out" \
          --configs block:1:128:256,block:32:128:256,blockcache:1:128:256 --decode-vs-block 1024 2>&1 | tail -16 ;;
    llada2) python3 -m pytest -q -x -p no:cacheprovider tests/model/test_moe_triton.py tests/model/test_moe_router_triton.py 2>&1 | tail -3
            python3 benchmarks/moe_kernels.py --tokens 32,1024 2>&1 | tail -40
            python3 benchmarks/gpu.py --budget 4 --shape llada2-mini --agreement "" \
              --configs quota:1:128:256,quota:32:128:256 2>&1 | tail -12 ;;
    traffic) python3 benchmarks/traffic.py --shape fast-dllm-v2-7b --requests 96 --out-dir "$out" 2>&1 | tail -14 ;;
    traffic-llada2) python3 benchmarks/traffic.py --shape llada2-mini --requests 96 2>&1 | tail -14 ;;
    prefix) python3 benchmarks/prefix_sharing.py --out-dir "$out" 2>&1 | tail -16 ;;
    canvas) for shape in llada-8b dream-7b; do
              python3 benchmarks/gpu.py --budget 4 --shape "$shape" --agreement "" \
                --configs dual:1:128:256,dual:32:128:256 2>&1 | tail -6
            done ;;
    *) echo "unknown stage $1"; return 2 ;;
  esac
}

if [ "${1:-}" = "--one" ]; then
  run_stage "$2"
  exit
fi
for spec in "$@"; do
  stage=${spec%%:*}
  limit=600
  [ "$spec" != "$stage" ] && limit=${spec#*:}
  echo "=== $stage (at most ${limit} s)"
  timeout "$limit" bash "$0" --one "$stage" | tee "$out/$stage.log"
done
