"""Kernel-time profile of one refresh and one block step (device tool), to see where time goes.

    PYTHONPATH=. python3 benchmarks/profile_gpu.py --batch 32 --cache dual
"""

from __future__ import annotations

import argparse

from torch.profiler import ProfilerActivity, profile

from benchmarks.gpu import LLADA_8B, random_model
from fastdllm_ray import Engine, EngineConfig, GenerationParams


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--cache", default="dual")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=256)
    ap.add_argument("--graphs", type=int, default=1)
    ap.add_argument("--compile", type=int, default=1)
    args = ap.parse_args()
    model = random_model(LLADA_8B)
    params = GenerationParams(steps=args.gen, gen_length=args.gen, block_length=32, cache=args.cache, stop_at_eos=False)
    engine = Engine(model, EngineConfig(max_num_seqs=args.batch, max_model_len=args.prompt + args.gen,
                                        cuda_graphs=bool(args.graphs), compile_blocks=bool(args.compile)))
    for i in range(args.batch):
        engine.add_request([(7 * i + j) % 1000 for j in range(args.prompt)], params)
    for _ in range(3):
        engine.step()
    for label in ("block step", "block step"):
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            engine.step()
        print(f"== {label}")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=22, max_name_column_width=100))
    while engine.scheduler.running[0].step != 0:
        engine.step()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        engine.step()
    print("== refresh")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=22, max_name_column_width=100))


if __name__ == "__main__":
    main()
