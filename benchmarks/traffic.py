"""Serving under real traffic, engine level: does the engine keep its static-batch speed when
requests arrive at any time with any lengths? (GPU, LLaDA-8B shape, random bf16, dual cache; or
`--shape fast-dllm-v2-7b`: Fast-dLLM v2 requests, each forward finishing a sub-block of 2 or 4;
`--shape llada2-mini`: LLaDA2.0 requests with a quota of 2 or 4 a step.)

In one run, on one warmed engine (warm_up() first; every capture after it is counted):
- traffic: requests joining at staggered engine steps (prompts 32-512, answers 64-512, blocks
  16/32/64, 2 or 4 tokens a step; arrivals a little faster than the engine finishes them, so
  the seats stay full), against the static batch of the same mean lengths and tokens per step;
  tokens/s over the whole replay and over the steps with every seat busy, graph captures,
  forwards per engine step, time to first block and latency percentiles;
- a batch of mixed prompt lengths (64-512) against equal prompts of the same total;
- the first request after warm_up() against the same request again (steady state).

    PYTHONPATH=. python3 benchmarks/traffic.py --out-dir $OUT
    PYTHONPATH=. python3 benchmarks/traffic.py --shape fast-dllm-v2-7b --out-dir $OUT
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.gpu import SHAPES, random_model
from benchmarks.workload import ANSWER_LENGTHS, mixed_prompts, static_batch, tokens_per_step_params, traffic
from fastdllm_ray import Engine, EngineConfig
from fastdllm_ray.engine.cuda_graphs import BLOCK_BUCKETS, row_buckets


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def replay(engine: Engine, requests) -> dict:
    """Adds each request at its arrival step and steps until all are done."""
    pending = sorted(requests, key=lambda r: r.arrival)
    captures, committed0 = engine.runner.captures, engine.stats.committed_tokens
    forwards0, seats = engine.stats.model_forwards, engine.config.max_num_seqs
    results, steps, full_tokens, full_time = [], 0, 0, 0.0
    start = time.perf_counter()
    while pending or engine.has_unfinished():
        while pending and pending[0].arrival <= steps:
            request = pending.pop(0)
            engine.add_request(request.prompt, request.params)
        before, t0 = engine.stats.committed_tokens, time.perf_counter()
        outputs = engine.step()
        if engine.stats.last_batch_size == seats:
            full_tokens += engine.stats.committed_tokens - before
            full_time += time.perf_counter() - t0
        results += [o.result for o in outputs if o.finished]
        steps += 1
    elapsed = time.perf_counter() - start
    ttfb = [r.time_to_first_block for r in results]
    latency = [r.latency for r in results]
    return {"requests": len(results), "tokens": engine.stats.committed_tokens - committed0, "seconds": elapsed,
            "tokens_per_s": (engine.stats.committed_tokens - committed0) / elapsed,
            "full_batch_tokens_per_s": full_tokens / full_time if full_time else float("nan"),
            "full_batch_share": full_time / elapsed, "engine_steps": steps,
            "forwards_per_step": (engine.stats.model_forwards - forwards0) / steps,
            "captures": engine.runner.captures - captures,
            "ttfb_p50": percentile(ttfb, 0.5), "ttfb_p90": percentile(ttfb, 0.9), "ttfb_p99": percentile(ttfb, 0.99),
            "latency_p50": percentile(latency, 0.5), "latency_p90": percentile(latency, 0.9),
            "latency_p99": percentile(latency, 0.99)}


def profile(engine: Engine, requests, steps: int, path: str | None) -> str:
    """Kernel time of `steps` engine steps of the traffic once every seat is busy."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    pending = sorted(requests, key=lambda r: r.arrival)
    step = 0
    while (engine.stats.last_batch_size < engine.config.max_num_seqs or step < 40) and (pending or step == 0):
        while pending and pending[0].arrival <= step:
            request = pending.pop(0)
            engine.add_request(request.prompt, request.params)
        engine.step()
        step += 1
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            while pending and pending[0].arrival <= step:
                request = pending.pop(0)
                engine.add_request(request.prompt, request.params)
            engine.step()
            step += 1
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    for seq in list(engine.scheduler.running) + list(engine.scheduler.waiting):
        engine.abort(seq.request_id)
    engine.step()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=30)
    if path:
        prof.export_chrome_trace(path)
    return f"{steps} steps, {1e3 * wall / steps:.1f} ms a step (wall)\n{table}"


def first_request(engine: Engine, family: str) -> dict:
    """The first request after warm-up and the same request again (batch 1, prompt 128, gen
    256, one token a step)."""
    prompt = torch.randint(0, 120000, (128,), generator=torch.Generator().manual_seed(5)).tolist()
    params = tokens_per_step_params(256, 32, 1, family)
    times = []
    for _ in range(2):
        engine.add_request(prompt, params)
        start = time.perf_counter()
        while engine.has_unfinished():
            engine.step()
        times.append(time.perf_counter() - start)
    return {"first_s": times[0], "steady_s": times[1], "first_tokens_per_s": 256 / times[0],
            "steady_tokens_per_s": 256 / times[1], "captures": engine.runner.captures}


def markdown(rows: dict, command: str, device: str, warm: dict, shape: str) -> str:
    lines = [f"Device: {device}. {shape} shape, random bf16, one engine with 32 seats, "
             f"`warm_up()` first ({warm['seconds']:.1f} s, {warm['captures']} graphs captured: every token bucket "
             f"and {len(row_buckets(32))} row buckets x {len(BLOCK_BUCKETS)} block widths, the bound for any traffic).",
             "", f"Command: `{command}`", "",
             "| workload | tokens/step | requests | tokens/s | tokens/s, all seats busy | ratio to static | "
             "graph captures | forwards/step | TTFB p50 / p90 / p99 s | latency p50 / p90 / p99 s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for (name, tps), r in rows.items():
        static = rows.get(("static batch", tps))
        ratio = r["full_batch_tokens_per_s"] / static["tokens_per_s"] if static and name == "traffic" else None
        lines.append(f"| {name} | {tps} | {r['requests']} | {r['tokens_per_s']:.1f} | {r['full_batch_tokens_per_s']:.1f} "
                     f"({100 * r['full_batch_share']:.0f}% of the time) | {'' if ratio is None else f'{ratio:.2f}'} | "
                     f"{r['captures']} | {r['forwards_per_step']:.2f} | {r['ttfb_p50']:.2f} / {r['ttfb_p90']:.2f} / "
                     f"{r['ttfb_p99']:.2f} | {r['latency_p50']:.1f} / {r['latency_p90']:.1f} / {r['latency_p99']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=128)
    ap.add_argument("--seats", type=int, default=32)
    ap.add_argument("--out-dir", default=None)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llada-8b")
    ap.add_argument("--profile", type=int, default=0, help="profile N traffic steps (4 tokens/step) and stop")
    args = ap.parse_args()
    shape, shape_config, model_class = SHAPES[args.shape]
    family = {"fast-dllm-v2-7b": "block", "llada2-mini": "quota"}.get(args.shape, "canvas")
    model = random_model(shape_config, model_class=model_class)
    engine = Engine(model, EngineConfig(max_num_seqs=args.seats, max_model_len=1024 + 64, max_queue=4 * args.requests))
    start = time.perf_counter()
    engine.warm_up()
    warm = {"seconds": time.perf_counter() - start, "captures": engine.runner.captures}
    print(json.dumps(warm), flush=True)
    if args.profile:
        mean_gen = sum(ANSWER_LENGTHS) / len(ANSWER_LENGTHS)
        trace = str(Path(args.out_dir, "trace.json")) if args.out_dir else None
        print(profile(engine, traffic(args.requests, mean_gen / 4 / (1.25 * args.seats), (4,), family=family),
                      args.profile, trace))
        print(profile(engine, static_batch(args.seats, (4,), family=family), args.profile, None))
        return
    first = first_request(engine, family)
    print(json.dumps(first), flush=True)
    rows, mean_gen = {}, sum(ANSWER_LENGTHS) / len(ANSWER_LENGTHS)
    for tps in (2, 4):
        rows[("static batch", tps)] = replay(engine, static_batch(args.seats, (tps,), family=family))
        print(json.dumps(rows[("static batch", tps)]), flush=True)
        interval = mean_gen / tps / (1.25 * args.seats)  # arrivals a quarter faster than departures
        rows[("traffic", tps)] = replay(engine, traffic(args.requests, interval, (tps,), family=family))
        print(json.dumps(rows[("traffic", tps)]), flush=True)
    mixed, same = mixed_prompts(args.seats, family=family)
    rows[("prompts 64-512", 1)] = replay(engine, mixed)
    rows[("prompts all equal, same total", 1)] = replay(engine, same)
    command = "PYTHONPATH=. python3 benchmarks/traffic.py" + (f" --requests {args.requests}" if args.requests != 128 else "")
    command += f" --shape {args.shape}" if args.shape != "llada-8b" else ""
    text = markdown(rows, command, torch.cuda.get_device_name(), warm, shape)
    mixed_ratio = rows[("prompts 64-512", 1)]["tokens_per_s"] / rows[("prompts all equal, same total", 1)]["tokens_per_s"]
    text += (f"\nMixed prompt lengths vs equal lengths with the same total tokens: {mixed_ratio:.2f}.\n"
             f"First request after warm_up(): {first['first_tokens_per_s']:.1f} tokens/s vs "
             f"{first['steady_tokens_per_s']:.1f} for the same request again "
             f"({first['first_tokens_per_s'] / first['steady_tokens_per_s']:.2f}); graph captures after warm-up: "
             f"{engine.runner.captures - warm['captures']}.\n")
    print(text)
    if args.out_dir:
        Path(args.out_dir, "traffic.md").write_text(text)
        Path(args.out_dir, "traffic.json").write_text(json.dumps({"warm": warm, "first": first, "rows": {
            f"{k[0]}|{k[1]}": v for k, v in rows.items()}}, indent=1))


if __name__ == "__main__":
    main()
