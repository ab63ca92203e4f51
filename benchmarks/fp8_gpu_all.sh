#!/usr/bin/env bash
# Issue 22's GPU measurements, each part one device call of at most 10 minutes (timeout_s 600).
# Every stage has its own time limit, writes its log and tables under OUT, and a stage that fails
# or runs out of time does not stop the next; the tables are printed together at the end.
#
#   part 1 (default): the FP8 kernels' CUDA tests; benchmarks/fp8_linear.py (candidates side by
#     side; its recommended kernel is then used by what follows); benchmarks/gpu.py --dtype fp8 on
#     the LLaDA-8B shape (bf16 and fp8 beside each other, ratios against the bars, fp8 vs
#     bf16 token agreement); benchmarks/deployment_fit.py --seats (8k seats per GPU, LLaDA-8B and
#     Dream-7B, bf16 vs fp8).
#   part 2 (`dream`): gpu.py --dtype fp8 on the Dream-7B shape; the shipped model's exact match,
#     bf16 vs fp8, through `fastdllm-ray eval` on the GPU; the FP8 engine CUDA tests.
#
# Here, once (torchao for fp8_linear.py's torchao candidates; carry .devbundle):
#   ../shared/tools/device-bundle 'torchao==0.17.0'
# On the GPU machine, from the repository root:
#   bash benchmarks/fp8_gpu_all.sh "$OUT"            # part 1
#   bash benchmarks/fp8_gpu_all.sh "$OUT" dream      # part 2
set -u
out=${1:?usage: benchmarks/fp8_gpu_all.sh OUT_DIR [dream]}
part=${2:-kernels}
mkdir -p "$out"
if [ -f .devbundle/site.tar.xz ]; then
  mkdir -p /tmp/site && tar xJf .devbundle/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=.:${PYTHONPATH:-} PYTHONUNBUFFERED=1

stage() {  # stage NAME SECONDS COMMAND...: runs COMMAND under a time limit, its output in OUT/NAME.log
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  rc=$?
  echo "== $name: exit $rc$([ $rc -eq 124 ] && echo ' (time limit)') after $(( $(date +%s) - start )) s of $limit"
}

show() {  # show FILE [LOG]: a stage's table, or the end of its log when it wrote none
  if [ -f "$1" ]; then cat "$1"; elif [ -n "${2:-}" ]; then echo "(no $1; end of $2:)"; tail -n 15 "$2"; fi
}

if [ "$part" = dream ]; then
  [ -f "$out/fp8_kernel.env" ] && . "$out/fp8_kernel.env"
  stage gpu_dream 300 python3 benchmarks/gpu.py --shape dream-7b --dtype fp8 --budget 5 \
    --configs dual:1:128:256,dual:32:128:256 --agreement "" --out-dir "$out"
  stage eval_bf16 70 python3 -m fastdllm_ray.cli eval --device cuda --dtype bfloat16 --num-problems 500 \
    --cache dual --schedule threshold --block-lengths 32 --no-progress --out-dir "$out/eval_bf16"
  stage eval_fp8 90 python3 -m fastdllm_ray.cli eval --device cuda --dtype fp8 --num-problems 500 \
    --cache dual --schedule threshold --block-lengths 32 --no-progress --out-dir "$out/eval_fp8"
  stage cuda_engine_tests 120 python3 -m pytest -q tests/model/test_fp8_cuda.py -k engine
  echo "kernel: ${FASTDLLM_FP8_KERNEL:-auto} (weight_only up to ${FASTDLLM_FP8_WEIGHT_ONLY_TOKENS:-64} tokens with auto)"
  sed -n '/### FP8 weights beside/,$p' "$out/gpu.md" 2>/dev/null || tail -n 15 "$out/gpu_dream.log"
  for d in bf16 fp8; do echo "eval $d:"; grep -E "dual cache|accuracy|%" "$out/eval_$d.log" | head -n 4; done
  tail -n 3 "$out/cuda_engine_tests.log"
  exit 0
fi

stage cuda_kernel_tests 75 python3 -m pytest -q tests/model/test_fp8_cuda.py -k "kernel or bytes"
stage fp8_linear 180 python3 benchmarks/fp8_linear.py --sweep 64,128,256 --out-dir "$out"
[ -f "$out/fp8_kernel.env" ] && . "$out/fp8_kernel.env"
stage gpu_llada 240 python3 benchmarks/gpu.py --dtype fp8 --budget 5 --configs dual:1:128:256,dual:32:128:256 \
  --agreement "" --out-dir "$out"
stage seats 90 python3 benchmarks/deployment_fit.py --seats --out-dir "$out"

tail -n 3 "$out/cuda_kernel_tests.log"
show "$out/fp8_linear.md" "$out/fp8_linear.log"
echo "kernel used below: ${FASTDLLM_FP8_KERNEL:-auto} (weight_only up to ${FASTDLLM_FP8_WEIGHT_ONLY_TOKENS:-64} tokens with auto)"
if [ -f "$out/gpu.md" ]; then sed -n '/^| variant/,/^$/p;/### FP8 weights beside/,$p' "$out/gpu.md"; else tail -n 15 "$out/gpu_llada.log"; fi
show "$out/seats_per_gpu.md" "$out/seats.log"
