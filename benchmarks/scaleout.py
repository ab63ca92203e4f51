"""Scale-out: aggregate tokens/s of the Ray Serve app with 1 and with 2 engine replicas, same load.

For each replica count it starts a local Ray cluster and the app (build_app with
`num_replicas=N`, one GPU per replica on cuda), warms every replica, then sends --requests
non-streaming chat completions from --concurrency workers (httpx async) with fixed
max_tokens and Fast-dLLM settings, and reports generated tokens/s, req/s, p50/p95 latency
and the 2-replica/1-replica throughput ratio (issue 7 item 5 asks >= 1.8x on 2 GPUs).

CPU validation (the shipped tiny model; a 2-core machine cannot show scaling):

    PYTHONPATH=. .venv/bin/python benchmarks/scaleout.py --device cpu --num-cpus 3 --requests 64 --concurrency 8 \
      --out BENCHMARKS.md

GPU run (device tool, kind nvidia-h200-x2; the GPU image lacks Ray, so first build the bundle
here with `../shared/tools/device-bundle`, which writes the git-ignored .devbundle/site.tar.xz,
and carry `.devbundle`). Two calls on the same warm machine (10 minutes a command): first the
random LLaDA-8B-shaped checkpoint (16 GB, written on the device machine), then the measurement
(the same prefix on both):

    mkdir -p /tmp/site && tar xJf .devbundle/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PYTHONPATH; \
    PYTHONPATH=.:$PYTHONPATH python3 benchmarks/scaleout.py --make-random-checkpoint /tmp/llada8b

    mkdir -p /tmp/site && tar xJf .devbundle/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PYTHONPATH; \
    PYTHONPATH=.:$PYTHONPATH python3 benchmarks/scaleout.py --device cuda --model /tmp/llada8b \
      --concurrency 64 --requests 128 --max-tokens 256 --block-length 32 --steps 256 \
      --max-num-seqs 32 --max-model-len 512 --out $OUT/BENCHMARKS.md

($OUT/BENCHMARKS.md then holds only this section: put it into the repository's BENCHMARKS.md
with update_section. If /tmp/llada8b is gone, the machine went cold: run both again.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.serving import pct
from fastdllm_ray.markdown_sections import update_section

SECTION = "scaleout"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
SHARD_BYTES = 2 << 30


@dataclass
class Result:
    replicas: int
    ok: int
    requests: int
    seconds: float
    tokens: int
    latencies: list[float]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def req_per_s(self) -> float:
        return self.ok / self.seconds


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


def measure(replicas: int, args) -> Result:
    from fastdllm_ray.serve.config import AppConfig
    from tests.serve.serve_harness import running_app

    queue = 2 * args.concurrency  # nothing refused: this measures throughput, not 503s
    config = AppConfig(model=args.model, device=args.device, num_replicas=replicas,
                       num_cpus_per_replica=args.cpus_per_replica,
                       dtype="bfloat16" if args.device == "cuda" else None,
                       engine={"max_num_seqs": args.max_num_seqs, "max_queue": queue,
                               "max_model_len": args.max_model_len})
    settings = {"max_tokens": args.max_tokens, "block_length": args.block_length, "steps": args.steps,
                "use_cache": True, "use_dual_cache": True}
    if args.threshold is not None:
        settings["threshold"] = args.threshold
    with running_app(config, num_cpus=args.num_cpus) as (url, _):
        wait_running()
        model = httpx.get(f"{url}/v1/models", timeout=30).json()["data"][0]["id"]
        # warm-up: enough parallel requests that Serve's router gives each replica some
        asyncio.run(drive(url, model, 2 * replicas, 4 * replicas, settings))
        seconds, done = asyncio.run(drive(url, model, args.concurrency, args.requests, settings))
    result = Result(replicas, len(done), args.requests, seconds, sum(t for _, t in done), [lat for lat, _ in done])
    print(f"replicas={replicas}: {result.ok}/{result.requests} ok in {seconds:.1f}s, {result.req_per_s:.2f} req/s, "
          f"{result.tokens_per_s:.1f} tok/s, p50 {pct(result.latencies, .5):.2f}s, "
          f"p95 {pct(result.latencies, .95):.2f}s", flush=True)
    return result


def describe_device(args) -> str:
    if args.device == "cuda":
        import torch

        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, one GPU per replica"
    return (f"CPU validation run on a {os.cpu_count()}-core {platform.machine()} machine, Ray num_cpus "
            f"{args.num_cpus}, {args.cpus_per_replica} CPU per replica: the replicas share the same cores, "
            "so this checks that the load reaches both replicas, not how 2 GPUs scale (2 replicas cannot be "
            "expected to scale on 2 cores); the GPU figure for issue 7 item 5 is still to be run")


def table(results: list[Result], args, command: str) -> str:
    lines = [
        f"`{command}`", "",
        f"{describe_device(args)}. Model: {args.model or 'the shipped tiny model'}. Load: {args.requests} "
        f"non-streaming chat completions from {args.concurrency} concurrent workers, max_tokens "
        f"{args.max_tokens}, block_length {args.block_length}, steps {args.steps}"
        f"{f', threshold {args.threshold}' if args.threshold is not None else ''}, dual cache, engine "
        f"max_num_seqs {args.max_num_seqs} per replica; tokens = completion tokens. Load average at start: "
        f"{args.load_at_start:.1f}.", "",
        "| replicas | requests ok | seconds | req/s | tokens/s | latency p50 (s) | latency p95 (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r.replicas} | {r.ok}/{r.requests} | {r.seconds:.1f} | {r.req_per_s:.2f} | "
                     f"{r.tokens_per_s:.1f} | {pct(r.latencies, .5):.2f} | {pct(r.latencies, .95):.2f} |")
    by = {r.replicas: r for r in results}
    if 1 in by and 2 in by:
        lines += ["", f"Aggregate tokens/s, 2 replicas / 1 replica: {by[2].tokens_per_s / by[1].tokens_per_s:.2f}x "
                      "(issue 7 item 5 asks >= 1.8x on 2 GPUs)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--model", help="checkpoint directory (default: the shipped model)")
    ap.add_argument("--make-random-checkpoint", type=Path, metavar="DIR",
                    help="write an LLaDA-8B-shaped random bf16 checkpoint to DIR and exit")
    ap.add_argument("--replicas", default="1,2", type=lambda s: [int(n) for n in s.split(",")])
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--requests", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--block-length", type=int, default=8)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--threshold", type=float)
    ap.add_argument("--max-num-seqs", type=int, default=16)
    ap.add_argument("--max-model-len", type=int,
                    help="K/V slot length (default: the model's; 4096 on the 8B shape = 2 GiB a slot)")
    ap.add_argument("--num-cpus", type=int, help="CPUs for Ray (default: all)")
    ap.add_argument("--cpus-per-replica", type=float, default=1)
    ap.add_argument("--out", type=Path, help="BENCHMARKS.md to write the `scaleout` section into")
    args = ap.parse_args()
    if args.make_random_checkpoint:
        print(f"wrote {make_random_checkpoint(args.make_random_checkpoint)}")
        return
    args.load_at_start = os.getloadavg()[0]
    results = [measure(n, args) for n in args.replicas]
    command = "PYTHONPATH=. python benchmarks/scaleout.py " + " ".join(sys.argv[1:])
    text = table(results, args, command)
    print(text)
    if args.out:
        title = "GPU" if args.device == "cuda" else "CPU validation"
        update_section(args.out, SECTION, f"## Scale-out: 1 vs 2 replicas ({title})\n\n" + text)


if __name__ == "__main__":
    main()
