"""Scale-out: aggregate tokens/s of the Ray Serve app over engine replicas, one GPU each.

For each replica count it starts a local Ray cluster and the app (build_app with
`num_replicas=N`, one GPU per replica on cuda), warms every replica, then sends --requests
non-streaming chat completions from --concurrency workers (httpx async) with fixed
max_tokens and Fast-dLLM settings, and records generated tokens/s, req/s and latencies.
With --per-replica, --concurrency and --requests are per replica (N times more for N
replicas: every replica saturated); without it every count gets the same load. Results
accumulate in --results (a JSON, written after each count, so a run cut short keeps what it
measured, and runs on one machine add up); --out writes their table, judged against issue 15
(2 replicas >= 1.8x with p50 no worse; N >= 0.9 N), into BENCHMARKS.md section
`scaleout-replicas`; benchmarks/scaleout_report.py draws the plot from the JSON.

CPU validation (the shipped tiny model; a 2-core machine cannot show scaling):

    PYTHONPATH=. .venv/bin/python benchmarks/scaleout.py --device cpu --num-cpus 3 --requests 64 --concurrency 8 \
      --results /tmp/scaleout-cpu.json

GPU runs (device tool; the GPU image lacks Ray, so first build the bundle here with
`../shared/tools/device-bundle`, which writes the git-ignored .devbundle/site.tar.xz, and carry
`.devbundle`). Every call below starts with this prefix (P):

    mkdir -p /tmp/site && tar xJf .devbundle/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PYTHONPATH;

1. On a fresh machine, the random LLaDA-8B-shaped checkpoint (16 GB, ~35 s to write; gone when
   the machine goes cold, then write it again):

    P PYTHONPATH=.:$PYTHONPATH python3 benchmarks/scaleout.py --make-random-checkpoint /tmp/llada8b

2. kind nvidia-h200-x2, issue 15 item 4 (1 vs 2 replicas, the same saturating load: 64 clients
   fill two 32-sequence batches), one call (~6 min):

    P PYTHONPATH=.:$PYTHONPATH python3 benchmarks/scaleout.py --device cuda --model /tmp/llada8b \
      --replicas 1,2 --concurrency 64 --requests 192 --max-tokens 256 --block-length 32 --steps 256 \
      --max-num-seqs 32 --max-model-len 512 --results $OUT/scaleout.json --out $OUT/BENCHMARKS.md

3. kind nvidia-h200-x4 or -x8 (N >= 0.9 N: each replica saturated, 32 clients and 96 requests
   per replica), one call per pair of counts so each stays under 10 minutes; copy the first
   call's $OUT/scaleout.json back into the tree and carry it (--results merges):

    P PYTHONPATH=.:$PYTHONPATH python3 benchmarks/scaleout.py --device cuda --model /tmp/llada8b \
      --replicas 1,2 --per-replica --concurrency 32 --requests 96 --max-tokens 256 --block-length 32 \
      --steps 256 --max-num-seqs 32 --max-model-len 512 --results $OUT/scaleout.json --out $OUT/BENCHMARKS.md
    P cp scaleout.json $OUT/ && PYTHONPATH=.:$PYTHONPATH python3 benchmarks/scaleout.py --device cuda \
      --model /tmp/llada8b --replicas 4,8 --per-replica --concurrency 32 --requests 96 --max-tokens 256 \
      --block-length 32 --steps 256 --max-num-seqs 32 --max-model-len 512 --results $OUT/scaleout.json \
      --out $OUT/BENCHMARKS.md

   (on -x4: --replicas 4 in the second call.)

Then, here: put $OUT/BENCHMARKS.md's section into BENCHMARKS.md (update_section, or
`benchmarks/scaleout_report.py scaleout.json --out BENCHMARKS.md`) and draw the plot:
`PYTHONPATH=. .venv/bin/python benchmarks/scaleout_report.py scaleout.json --plot benchmarks/scaleout.png`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import httpx

from benchmarks import scaleout_report as report
from benchmarks.serving import pct

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
SHARD_BYTES = 2 << 30


def make_random_checkpoint(directory: Path, config=None) -> Path:
    """An LLaDA-8B-shaped checkpoint with random bf16 weights and the shipped tokenizer files
    (its ids are a few hundred, all inside the 8B vocabulary), built on the GPU if there is one."""
    import torch

    from benchmarks.gpu import LLADA_8B, random_model
    from fastdllm_ray.model import default_model_path
    from fastdllm_ray.model.checkpoint import save_checkpoint

    model = random_model(config or LLADA_8B, device="cuda" if torch.cuda.is_available() else "cpu")
    save_checkpoint(model, directory, max_shard_bytes=SHARD_BYTES, dtype=torch.bfloat16)
    for name in TOKENIZER_FILES:
        shutil.copy(default_model_path() / name, Path(directory) / name)
    return Path(directory)


async def drive(url: str, model: str, concurrency: int, total: int, settings: dict) -> tuple[float, list]:
    """`total` chat completions from `concurrency` workers; returns (seconds, [(latency, tokens)])."""
    bodies = [{"model": model, "messages": [{"role": "user", "content": f"What is {7 + i} * {3 + 2 * i}?"}],
               **settings} for i in range(total)]
    queue: asyncio.Queue = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    done: list[tuple[float, int]] = []

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            start = time.perf_counter()
            reply = await client.post(f"{url}/v1/chat/completions", json=body)
            if reply.status_code == 200:
                done.append((time.perf_counter() - start, reply.json()["usage"]["completion_tokens"]))
            else:
                print(f"HTTP {reply.status_code}: {reply.text[:200]}", file=sys.stderr)

    async with httpx.AsyncClient(timeout=1800, limits=httpx.Limits(max_connections=concurrency + 4)) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return time.perf_counter() - start, done


def wait_running(app_name: str = "fastdllm", timeout_s: float = 900) -> None:
    """Every replica up (the ingress answers /health before the engine replicas all run)."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while serve.status().applications[app_name].status != "RUNNING":
        if time.monotonic() > deadline:
            raise RuntimeError(f"app {app_name} not RUNNING after {timeout_s}s")
        time.sleep(1)


def measure(replicas: int, args) -> dict:
    """One replica count under the load the flags describe; what the results JSON keeps of it."""
    from fastdllm_ray.serve.config import AppConfig
    from fastdllm_ray.serve.local import local_app

    scale = replicas if args.per_replica else 1
    concurrency, requests = args.concurrency * scale, args.requests * scale
    queue = 2 * concurrency  # nothing refused: this measures throughput, not 503s
    config = AppConfig(model=args.model, device=args.device, num_replicas=replicas,
                       num_cpus_per_replica=args.cpus_per_replica,
                       dtype="bfloat16" if args.device == "cuda" else None,
                       engine={"max_num_seqs": args.max_num_seqs, "max_queue": queue,
                               "max_model_len": args.max_model_len})
    settings = {"max_tokens": args.max_tokens, "block_length": args.block_length, "steps": args.steps,
                "use_cache": True, "use_dual_cache": True}
    if args.threshold is not None:
        settings["threshold"] = args.threshold
    with local_app(config, num_cpus=args.num_cpus) as (url, _):
        wait_running()
        model = httpx.get(f"{url}/v1/models", timeout=30).json()["data"][0]["id"]
        # warm-up: enough parallel requests that Serve's router gives each replica some
        asyncio.run(drive(url, model, 2 * replicas, 4 * replicas, settings))
        seconds, done = asyncio.run(drive(url, model, concurrency, requests, settings))
    run = {"concurrency": concurrency, "requests": requests, "ok": len(done), "seconds": seconds,
           "tokens": sum(t for _, t in done), "latencies": [lat for lat, _ in done]}
    print(f"replicas={replicas}: {run['ok']}/{requests} ok in {seconds:.1f}s, {run['tokens'] / seconds:.1f} tok/s, "
          f"p50 {pct(run['latencies'], .5):.2f}s, p95 {pct(run['latencies'], .95):.2f}s", flush=True)
    return run


def describe(args) -> str:
    if args.device == "cuda":
        import torch

        where = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, one GPU per replica, bf16"
    else:
        where = (f"CPU validation on a {os.cpu_count()}-core {platform.machine()} machine (load average "
                 f"{os.getloadavg()[0]:.1f}), Ray num_cpus {args.num_cpus}: the replicas share the same cores, so "
                 "this checks that the load reaches every replica, not how GPUs scale")
    load = (f"{args.concurrency} clients and {args.requests} requests per replica" if args.per_replica else
            f"{args.concurrency} clients and {args.requests} requests for every replica count")
    return (f"{where}. Model: {args.model or 'the shipped tiny model'}. Load: {load}, non-streaming chat "
            f"completions, max_tokens {args.max_tokens}, block_length {args.block_length}, steps {args.steps}"
            f"{f', threshold {args.threshold}' if args.threshold is not None else ''}, dual cache; engine "
            f"max_num_seqs {args.max_num_seqs} per replica; tokens = completion tokens.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--model", help="checkpoint directory (default: the shipped model)")
    ap.add_argument("--make-random-checkpoint", type=Path, metavar="DIR",
                    help="write an LLaDA-8B-shaped random bf16 checkpoint to DIR and exit")
    ap.add_argument("--replicas", default="1,2", type=lambda s: [int(n) for n in s.split(",")])
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--requests", type=int, default=24)
    ap.add_argument("--per-replica", action="store_true", help="--concurrency and --requests are per replica")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--block-length", type=int, default=8)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--threshold", type=float)
    ap.add_argument("--max-num-seqs", type=int, default=16)
    ap.add_argument("--max-model-len", type=int,
                    help="K/V slot length (default: the model's; 4096 on the 8B shape = 2 GiB a slot)")
    ap.add_argument("--num-cpus", type=int, help="CPUs for Ray (default: all)")
    ap.add_argument("--cpus-per-replica", type=float, default=1)
    ap.add_argument("--results", type=Path, help="JSON the measurements are added to (kept across runs)")
    ap.add_argument("--out", type=Path, help="BENCHMARKS.md to write the `scaleout-replicas` section into")
    args = ap.parse_args()
    if args.make_random_checkpoint:
        print(f"wrote {make_random_checkpoint(args.make_random_checkpoint)}")
        return
    results = report.load(args.results) if args.results else {"runs": {}}
    results["description"] = describe(args)
    results.setdefault("commands", []).append("PYTHONPATH=. python benchmarks/scaleout.py " + " ".join(sys.argv[1:]))
    for n in args.replicas:
        results["runs"][str(n)] = measure(n, args)
        if args.results:
            args.results.write_text(json.dumps(results, indent=1))
    print(report.table(results))
    if args.out:
        title = "GPUs" if args.device == "cuda" else "CPU validation"
        report.write_section(results, args.out, f"Scale-out: the Serve app over replicas ({title})")


if __name__ == "__main__":
    main()
