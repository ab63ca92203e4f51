"""Does a GPU deployment's engine fit its GPU? (run through the device tool)

Runs the engine exactly as deployments/<name>.yaml sizes it (`engine.max_num_seqs` slots of
`engine.max_model_len` tokens, every slot busy with the longest request that fits) on an
LLaDA-8B-shaped model with random bf16 weights, for each cache mode a client can pick, and
reports peak GPU memory against the card's. Random weights never end early, so each slot
stays busy; two blocks per request are enough to reach the peak (the first refresh is the
largest forward, and CUDA graphs are captured on first use).

    PYTHONPATH=. python3 benchmarks/deployment_fit.py deployments/llada-8b-instruct.yaml --out-dir $OUT
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import yaml

from benchmarks.gpu import LLADA_8B, random_model, weight_bytes
from fastdllm_ray import Engine, EngineConfig, GenerationParams
from fastdllm_ray.commands.sections import update_section

GIB = 2**30


def engine_sizes(path: str) -> dict:
    args = yaml.safe_load(Path(path).read_text())["applications"][0]["args"]
    engine = args.get("engine") or {}
    return {"max_num_seqs": engine.get("max_num_seqs", 16), "max_model_len": engine.get("max_model_len"),
            "max_queue": engine.get("max_queue", 64), "model": args.get("model")}


def fill_and_run(model, sizes: dict, cache: str, gen: int, block: int = 32, blocks: int = 2) -> dict:
    slots, slot_len = sizes["max_num_seqs"], sizes["max_model_len"] or LLADA_8B.max_sequence_length
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    engine = Engine(model, EngineConfig(max_num_seqs=slots, max_model_len=slot_len, max_queue=sizes["max_queue"]))
    params = GenerationParams(steps=gen // block, gen_length=gen, block_length=block, cache=cache,
                              stop_at_eos=False)  # one step per block: memory, not quality
    prompt = slot_len - gen
    ids = torch.randint(0, 120000, (slots, prompt), generator=torch.Generator().manual_seed(0))
    for row in ids.tolist():
        engine.add_request(row, params)
    start = time.perf_counter()
    while engine.has_unfinished() and engine.stats.committed_tokens < blocks * block * slots:
        engine.step()
    torch.cuda.synchronize()
    return {"cache": cache, "slots": slots, "prompt": prompt, "gen": gen, "seconds": time.perf_counter() - start,
            "peak_alloc_gib": torch.cuda.max_memory_allocated() / GIB,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / GIB}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("deployment")
    ap.add_argument("--gen", type=int, default=1024, help="answer tokens per request (the rest is prompt)")
    ap.add_argument("--out-dir", default=None)
    ap.add_argument("--benchmarks-md", default=None, help="replace this script's section of that file")
    args = ap.parse_args()
    sizes = engine_sizes(args.deployment)
    model = random_model(LLADA_8B)
    free, total = torch.cuda.mem_get_info()
    cache_gib = 2 * sizes["max_num_seqs"] * sizes["max_model_len"] * LLADA_8B.n_layers * LLADA_8B.d_model * 2 / GIB
    rows = [fill_and_run(model, sizes, cache, args.gen) for cache in ("dual", "prefix", "none")]
    lines = [f"`{args.deployment}` on {torch.cuda.get_device_name()} ({total / GIB:.1f} GiB): weights "
             f"{weight_bytes(model) / GIB:.1f} GiB + the embedding table, K/V cache {cache_gib:.1f} GiB "
             f"({sizes['max_num_seqs']} slots x {sizes['max_model_len']} tokens), every slot busy.", "",
             "| cache | requests | prompt + answer | peak allocated GiB | peak reserved GiB | headroom GiB | s for 2 blocks (first row: + compile) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['cache']} | {r['slots']} | {r['prompt']} + {r['gen']} | {r['peak_alloc_gib']:.1f} | "
                     f"{r['peak_reserved_gib']:.1f} | {total / GIB - r['peak_reserved_gib']:.1f} | {r['seconds']:.1f} |")
    spare = min(total / GIB - r["peak_reserved_gib"] for r in rows)
    lines.append("")
    lines.append(f"Least headroom: {spare:.1f} GiB ({'fits' if spare > 2 else 'does NOT fit'} with room for "
                 "fragmentation and the CUDA context).")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out_dir:
        Path(args.out_dir, "deployment_fit.md").write_text(text)
    if args.benchmarks_md:
        command = "PYTHONPATH=. python3 benchmarks/deployment_fit.py " + " ".join(sys.argv[1:])
        update_section(Path(args.benchmarks_md), "deployment-fit",
                       f"## Deployment fit (GPU memory)\n\nMeasured with `{command}` (random bf16 weights of "
                       "the LLaDA-8B shape).\n\n" + text)


if __name__ == "__main__":
    main()
