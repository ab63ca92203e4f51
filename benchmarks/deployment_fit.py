"""Does a GPU deployment's engine fit its GPU? (run through the device tool)

Runs the engine exactly as deployments/<name>.yaml sizes it (`engine.max_num_seqs` slots of
`engine.max_model_len` tokens, every slot busy with the longest request that fits) on an
LLaDA-8B-shaped model with random bf16 weights, for each cache mode a client can pick, and
reports peak GPU memory against the card's. Random weights never end early, so each slot
stays busy; two blocks per request are enough to reach the peak (the first refresh is the
largest forward, and CUDA graphs are captured on first use).

    PYTHONPATH=. python3 benchmarks/deployment_fit.py deployments/llada-8b-instruct.yaml --out-dir $OUT

`--seats`: sequences of 8k context (`--context`) one GPU holds for LLaDA-8B and Dream-7B in bf16
and FP8, as the engine sizes its K/V pool (engine/memory.py, gpu_memory_utilization 0.9): the
largest max_num_seqs whose pool holds every seat at full length. Each count is then checked: an
engine of that many seats (no CUDA graphs, eager blocks: the largest activations) is filled with
full-length requests and runs its first step, a refresh of every seat at once (the step the
sizing reserves activations for); the peak it reached is printed beside the GPU's memory.

    PYTHONPATH=. python3 benchmarks/deployment_fit.py --seats --out-dir $OUT
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch
import yaml

from benchmarks.gpu import LLADA_8B, SHAPES, random_model, weight_bytes
from fastdllm_ray import Engine, EngineConfig, GenerationParams
from fastdllm_ray.commands.sections import update_section
from fastdllm_ray.engine.memory import plan_from_profile, profile
from fastdllm_ray.model.fp8 import quantize_model

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


def seats_per_gpu(shape: str, dtype: str, context: int, utilization: float) -> dict:
    """The most seats of `context` positions the sized pool holds, checked by a full first step."""
    name, cfg, model_class = SHAPES[shape]
    model = random_model(dataclasses.replace(cfg, max_sequence_length=context), model_class=model_class)
    if dtype == "fp8":
        quantize_model(model)
    measured = profile(model)

    def holds(seats: int) -> bool:
        config = EngineConfig(max_num_seqs=seats, max_model_len=context, gpu_memory_utilization=utilization)
        try:
            return plan_from_profile(measured, config, context).seats_fit(context) >= seats
        except ValueError:  # not even one sequence
            return False

    seats = 0
    while holds(seats + 1):
        seats += 1
    row = {"model": name, "dtype": dtype, "weights_gib": weight_bytes(model) / GIB, "in_use_gib": measured.in_use / GIB,
           "kv_kib": measured.kv_per_token / 1024, "act_kib": measured.activation_per_token / 1024, "seats": seats,
           "total_gib": measured.total / GIB, "peak_gib": float("nan"), "step_s": float("nan")}
    if seats:
        torch.cuda.reset_peak_memory_stats()
        engine = Engine(model, EngineConfig(max_num_seqs=seats, max_model_len=context, max_queue=seats,
                                            gpu_memory_utilization=utilization, cuda_graphs=False,
                                            compile_blocks=False))
        params = GenerationParams(steps=2, gen_length=64, block_length=32, cache="dual", stop_at_eos=False)
        prompts = torch.randint(0, 120000, (seats, context - 64), generator=torch.Generator().manual_seed(0))
        for ids in prompts.tolist():
            engine.add_request(ids, params)
        start = time.perf_counter()
        outs = engine.step()  # every seat refreshes its whole sequence in this one forward
        torch.cuda.synchronize()
        failed = [o.result.error for o in outs if o.finished and o.result.error]
        row.update(step_s=time.perf_counter() - start, peak_gib=torch.cuda.max_memory_reserved() / GIB,
                   pool_gib=engine.pool.num_pages * engine.pool.page_size * measured.kv_per_token / GIB,
                   error=failed[0] if failed else "")
        del engine
    del model
    torch.cuda.empty_cache()
    return row


def seats_table(context: int, utilization: float) -> str:
    rows = []
    for shape in ("llada-8b", "dream-7b"):
        for dtype in ("bf16", "fp8"):
            rows.append(seats_per_gpu(shape, dtype, context, utilization))
            print(rows[-1], flush=True)
    lines = [f"Seats of {context} positions per {torch.cuda.get_device_name()} ({rows[0]['total_gib']:.1f} GiB), "
             f"K/V pool sized by the engine at gpu_memory_utilization {utilization:g}; random weights of each shape. "
             "Check: that many seats, every one full, first step = one refresh of all of them (eager).", "",
             "| model | dtype | weights GiB | in use GiB | K/V KiB / position | activations KiB / position | seats | "
             "K/V pool GiB | check: peak reserved GiB | check: step s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        check = f"{r['peak_gib']:.1f}" + (f" FAILED: {r['error'][:80]}" if r.get("error") else "")
        lines.append(f"| {r['model']} | {r['dtype']} | {r['weights_gib']:.1f} | {r['in_use_gib']:.1f} | {r['kv_kib']:.0f} | "
                     f"{r['act_kib']:.0f} | **{r['seats']}** | {r.get('pool_gib', float('nan')):.1f} | {check} | "
                     f"{r['step_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("deployment", nargs="?", help="a deployments/<name>.yaml (not needed with --seats)")
    ap.add_argument("--seats", action="store_true", help="seats per GPU at --context for LLaDA-8B and Dream-7B, "
                                                         "bf16 and fp8, instead of a deployment's fit")
    ap.add_argument("--context", type=int, default=8192)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    ap.add_argument("--gen", type=int, default=1024, help="answer tokens per request (the rest is prompt)")
    ap.add_argument("--out-dir", default=None)
    ap.add_argument("--benchmarks-md", default=None, help="replace this script's section of that file")
    args = ap.parse_args()
    if args.seats:
        text = seats_table(args.context, args.gpu_memory_utilization)
        print(text)
        if args.out_dir:
            Path(args.out_dir, "seats_per_gpu.md").write_text(text)
        return
    if not args.deployment:
        ap.error("deployment: give a deployments/<name>.yaml, or --seats")
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
