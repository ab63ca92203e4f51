"""Serving throughput and latency at concurrency 1, 4, 16, 64 over HTTP (streaming completions).

Against --base-url if given; otherwise starts a local Ray cluster and the app itself, twice:
engine batching on (max_num_seqs 16) and one request at a time (max_num_seqs 1), same model,
same requests. Each level sends `max(--min-requests, concurrency)` requests from `concurrency`
workers; latency is end to end, TTFB is the time to the first streamed block.

    PYTHONPATH=. .venv/bin/python benchmarks/serving.py --out BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.streamed import stream_completion
from fastdllm_ray.commands.sections import update_section

SECTION = "serving"
MODES = {"batched": 16, "single": 1}  # mode -> engine max_num_seqs


@dataclass
class Level:
    mode: str
    concurrency: int
    requests: int
    ok: int
    seconds: float
    tokens: int
    latencies: list[float]
    ttfbs: list[float]
    peak_batch: int | None = None

    @property
    def req_per_s(self) -> float:
        return self.ok / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def one_request(client: httpx.AsyncClient, url: str, body: dict) -> tuple[float, float, int] | None:
    start = time.perf_counter()
    reply = await stream_completion(client, url, body)
    if reply.status != 200:
        return None
    return reply.done - start, (reply.first - start) if reply.first is not None else 0.0, reply.tokens


async def run_level(url: str, model: str, concurrency: int, total: int, settings: dict, mode: str) -> Level:
    bodies = [{"model": model, "prompt": f"{7 + i}*{3 + 2 * i}=", "stream": True,
               "stream_options": {"include_usage": True}, **settings} for i in range(total)]
    queue: asyncio.Queue = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    results: list[tuple[float, float, int]] = []

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            outcome = await one_request(client, url, queue.get_nowait())
            if outcome is not None:
                results.append(outcome)

    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    return Level(mode, concurrency, total, len(results), seconds, sum(r[2] for r in results),
                 [r[0] for r in results], [r[1] for r in results])


def model_name(url: str) -> str:
    return httpx.get(f"{url}/v1/models", timeout=30).json()["data"][0]["id"]


def measure(url: str, mode: str, args, stats=None) -> list[Level]:
    name = args.model_name or model_name(url)
    settings = {"max_tokens": args.max_tokens, "block_length": args.block_length, "steps": args.steps}
    if args.threshold is not None:
        settings["threshold"] = args.threshold
    asyncio.run(run_level(url, name, 1, 2, settings, mode))  # warm-up: first forwards are slow
    levels = []
    for concurrency in args.concurrency:
        runs = [asyncio.run(run_level(url, name, concurrency, max(args.min_requests, concurrency), settings, mode))
                for _ in range(args.repeats)]
        level = sorted(runs, key=lambda r: r.tokens_per_s)[len(runs) // 2]  # the median run: the host is shared
        if stats is not None:
            level.peak_batch = stats()["max_batch_size"]
        print(f"{mode:8s} c={concurrency:3d}: {level.ok}/{level.requests} ok, {level.req_per_s:.2f} req/s, "
              f"{level.tokens_per_s:.1f} tok/s, p50 {pct(level.latencies, .5):.2f}s, "
              f"p95 {pct(level.latencies, .95):.2f}s, ttfb p50 {pct(level.ttfbs, .5):.2f}s", flush=True)
        levels.append(level)
    return levels


def measure_local(args) -> list[Level]:
    import ray
    from ray import serve

    from fastdllm_ray.commands.serve import start
    from fastdllm_ray.serve.config import AppConfig

    ray.init(num_cpus=args.num_cpus, include_dashboard=False)
    levels = []
    try:
        for mode in args.modes:
            queue = 2 * max(args.concurrency)  # nothing refused: this measures waiting, not 503s
            config = AppConfig(model=args.model, engine={"max_num_seqs": MODES[mode], "max_queue": queue},
                               max_ongoing_requests=MODES[mode] + queue)
            url = start(config, port=args.port, app_name=f"bench-{mode}")
            handle = serve.get_deployment_handle("EngineReplica", app_name=f"bench-{mode}")
            levels += measure(url, mode, args, stats=lambda: handle.stats.remote().result())
            serve.delete(f"bench-{mode}")
    finally:
        serve.shutdown()
        ray.shutdown()
    return levels


def table(levels: list[Level], args, command: str) -> str:
    lines = [
        f"`{command}` on {platform.processor() or platform.machine()}, {args.num_cpus} CPUs for Ray, "
        f"{'the shipped tiny model' if not args.model else args.model}; each request: streamed completion, "
        f"max_tokens {args.max_tokens}, block_length {args.block_length}, steps {args.steps}"
        f"{f', threshold {args.threshold}' if args.threshold is not None else ''}, dual cache. "
        "batched = engine max_num_seqs 16, single = 1 (requests wait their turn); tokens = completion "
        "tokens (cut at the end token). "
        f"Each row: the median of {args.repeats} runs by throughput. Load average when the run began: "
        f"{args.load_at_start:.1f} on 2 cores (the machine is shared with other work: expect noise).",
        "",
        "| engine | concurrency | requests | req/s | tokens/s | latency p50 (s) | latency p95 (s) "
        "| first block p50 (s) | peak batch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for lv in levels:
        lines.append(f"| {lv.mode} | {lv.concurrency} | {lv.ok}/{lv.requests} | {lv.req_per_s:.2f} | "
                     f"{lv.tokens_per_s:.1f} | {pct(lv.latencies, .5):.2f} | {pct(lv.latencies, .95):.2f} | "
                     f"{pct(lv.ttfbs, .5):.2f} | {lv.peak_batch if lv.peak_batch is not None else '-'} |")
    by = {(lv.mode, lv.concurrency): lv for lv in levels}
    gains = [f"c={c}: {by[('batched', c)].tokens_per_s / by[('single', c)].tokens_per_s:.1f}x"
             for c in args.concurrency if ('batched', c) in by and ('single', c) in by]
    if gains:
        lines += ["", "Throughput of batched over single: " + ", ".join(gains) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", help="a running server (default: start one per engine mode)")
    ap.add_argument("--model", help="checkpoint for a server started here (default: the shipped model)")
    ap.add_argument("--model-name", help="model name to send (default: the server's first)")
    ap.add_argument("--concurrency", default="1,4,16,64", type=lambda s: [int(c) for c in s.split(",")])
    ap.add_argument("--modes", default="batched,single", type=lambda s: s.split(","))
    ap.add_argument("--min-requests", type=int, default=8, help="requests per level, at least")
    ap.add_argument("--repeats", type=int, default=3, help="runs per level; the median one is reported")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--block-length", type=int, default=8)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--threshold", type=float)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--out", type=Path, help="BENCHMARKS.md to write the `serving` section into")
    args = ap.parse_args()
    args.load_at_start = os.getloadavg()[0]
    levels = measure(args.base_url.rstrip("/"), "external", args) if args.base_url else measure_local(args)
    command = "PYTHONPATH=. .venv/bin/python benchmarks/serving.py " + " ".join(sys.argv[1:])
    text = table(levels, args, command)
    print(text)
    if args.out:
        update_section(args.out, SECTION, "## Serving over HTTP (CPU)\n\n" + text)


if __name__ == "__main__":
    main()
