"""Serving under real traffic over HTTP: the Ray Serve app (one replica) and the engine alone
replay the same requests (benchmarks/workload.py) at the same wall-clock arrival times.

Reports, for each: generated tokens/s from the first arrival to the last answer, time to first
block and latency percentiles (the HTTP side measured by the client on streamed completions);
the ratio HTTP / engine; and, from the replica's Prometheus endpoint, its graph captures
counter and time-to-first-block histogram.

GPU (device tool; carry `.devbundle` built by ../shared/tools/device-bundle):

    mkdir -p /tmp/site && tar xJf .devbundle/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:.; \
    python3 benchmarks/scaleout.py --make-random-checkpoint /tmp/llada8b && \
    python3 benchmarks/traffic_http.py --model /tmp/llada8b --device cuda --out-dir $OUT

CPU check of the script (shipped model, short lengths): `--model shipped --device cpu --tiny`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from pathlib import Path

import httpx

from benchmarks import workload
from benchmarks.streamed import stream_completion
from benchmarks.traffic import percentile


def app_config(args) -> dict:
    return {"model": None if args.model == "shipped" else args.model, "model_name": "bench", "device": args.device,
            "dtype": "bfloat16" if args.device == "cuda" else None, "num_replicas": 1,
            "engine": {"max_num_seqs": args.seats, "max_model_len": args.max_model_len, "max_queue": 4 * args.requests},
            "max_ongoing_requests": 5 * args.requests, "request_timeout_s": 3600}


def body(request: workload.Request) -> dict:
    p = request.params
    return {"model": "bench", "prompt": request.prompt, "max_tokens": p.gen_length, "stream": True,
            "stream_options": {"include_usage": True}, "temperature": 0, "block_length": p.block_length,
            "steps": p.steps, "use_cache": True, "use_dual_cache": True}


async def one(client: httpx.AsyncClient, url: str, request: workload.Request, start: float) -> dict:
    await asyncio.sleep(max(0.0, start + request.arrival - time.perf_counter()))
    sent = time.perf_counter()
    reply = await stream_completion(client, url, body(request))
    if reply.status != 200:
        return {"error": reply.status, "text": reply.error}
    return {"tokens": reply.tokens, "ttfb": (reply.first or reply.done) - sent, "latency": reply.done - sent,
            "done": reply.done}


async def replay_http(url: str, requests: list[workload.Request]) -> dict:
    async with httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=1000)) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(one(client, url, r, start) for r in requests))
    ok = [r for r in results if "error" not in r]
    return summary(ok, max(r["done"] for r in ok) - start, len(results) - len(ok))


def summary(results: list[dict], seconds: float, failed: int = 0) -> dict:
    tokens = sum(r["tokens"] for r in results)
    ttfb, latency = [r["ttfb"] for r in results], [r["latency"] for r in results]
    return {"requests": len(results), "failed": failed, "tokens": tokens, "seconds": seconds,
            "tokens_per_s": tokens / seconds, **{f"ttfb_p{q}": percentile(ttfb, q / 100) for q in (50, 90, 99)},
            **{f"latency_p{q}": percentile(latency, q / 100) for q in (50, 90, 99)}}


def replay_engine(args, requests: list[workload.Request]) -> dict:
    """The same arrivals, wall-clock, into an Engine in this process (after the app is gone)."""
    from fastdllm_ray import Engine, EngineConfig, load_model
    from fastdllm_ray.model import default_model_path

    model = load_model(str(default_model_path()) if args.model == "shipped" else args.model, device=args.device)
    engine = Engine(model, EngineConfig(max_num_seqs=args.seats, max_model_len=args.max_model_len,
                                        max_queue=4 * args.requests))
    engine.warm_up()
    pending, results = sorted(requests, key=lambda r: r.arrival), []
    start = time.perf_counter()
    while pending or engine.has_unfinished():
        while pending and pending[0].arrival <= time.perf_counter() - start:
            request = pending.pop(0)
            engine.add_request(request.prompt, request.params.with_changes(stop_at_eos=True))
        if not engine.has_unfinished():
            time.sleep(0.001)
            continue
        for out in engine.step():
            if out.finished:
                r = out.result
                results.append({"tokens": len(r.token_ids), "ttfb": r.time_to_first_block, "latency": r.latency})
    return summary(results, time.perf_counter() - start)


def scrape(metrics_url: str) -> dict:
    text = httpx.get(metrics_url, timeout=30).text

    def total(name: str) -> float:
        return sum(float(m.group(1)) for m in re.finditer(rf"^{name}{{[^}}]*}} (\S+)$", text, re.M))

    count = total("ray_fastdllm_time_to_first_block_seconds_count")
    return {"graph_captures_total": total("ray_fastdllm_graph_captures_total"),
            "ttfb_histogram_count": count,
            "ttfb_histogram_mean_s": total("ray_fastdllm_time_to_first_block_seconds_sum") / count if count else None}


def run_http(args, requests) -> tuple[dict, dict]:
    import ray
    from ray import serve

    from fastdllm_ray.commands.serve import start
    from fastdllm_ray.serve.config import AppConfig
    from fastdllm_ray.serve.local import free_port

    metrics_port, http_port = free_port(), free_port()
    ray.init(address="local", include_dashboard=False, _metrics_export_port=metrics_port,
             num_gpus=1 if args.device == "cuda" else 0)
    try:
        url = start(AppConfig.model_validate(app_config(args)), port=http_port)
        deadline = time.monotonic() + 900
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=10).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the app did not become healthy"
            time.sleep(1)
        result = asyncio.run(replay_http(url, requests))
        time.sleep(12)  # Ray's agent exports a replica's metrics every few seconds
        return result, scrape(f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        serve.shutdown()
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="checkpoint directory, or 'shipped'")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--requests", type=int, default=128)
    ap.add_argument("--seats", type=int, default=32)
    ap.add_argument("--max-model-len", type=int, default=1088)
    ap.add_argument("--tokens-per-step", type=int, default=4)
    ap.add_argument("--interval", type=float, default=0.2, help="seconds between arrivals")
    ap.add_argument("--tiny", action="store_true", help="short lengths and a small vocabulary (CPU check)")
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args()
    if args.tiny:
        workload.PROMPT_RANGE, workload.ANSWER_LENGTHS, workload.BLOCK_LENGTHS = (8, 40), (16, 32, 48, 64), (8, 16)
    vocab = 60 if args.tiny else 120000
    requests = workload.traffic(args.requests, args.interval, (args.tokens_per_step,), vocab=vocab)
    http, metrics = run_http(args, requests)
    print(json.dumps({"http": http, "metrics": metrics}), flush=True)
    engine = replay_engine(args, requests)
    print(json.dumps({"engine": engine}), flush=True)
    ratio = http["tokens_per_s"] / engine["tokens_per_s"]
    lines = ["| path | requests | failed | tokens/s | TTFB p50 / p90 / p99 s | latency p50 / p90 / p99 s |",
             "|---|---:|---:|---:|---|---|"]
    for name, r in (("engine alone", engine), ("Serve app over HTTP (streamed)", http)):
        lines.append(f"| {name} | {r['requests']} | {r['failed']} | {r['tokens_per_s']:.1f} | {r['ttfb_p50']:.2f} / "
                     f"{r['ttfb_p90']:.2f} / {r['ttfb_p99']:.2f} | {r['latency_p50']:.1f} / {r['latency_p90']:.1f} / "
                     f"{r['latency_p99']:.1f} |")
    text = "\n".join(lines) + (f"\n\nHTTP / engine: {ratio:.2f}. Replica metrics after the run: "
                               f"`ray_fastdllm_graph_captures_total` {metrics['graph_captures_total']:.0f}, "
                               f"`ray_fastdllm_time_to_first_block_seconds` count {metrics['ttfb_histogram_count']:.0f}, "
                               f"mean {metrics['ttfb_histogram_mean_s'] or float('nan'):.2f} s.\n")
    print(text)
    if args.out_dir:
        Path(args.out_dir, "traffic_http.md").write_text(text)


if __name__ == "__main__":
    main()
