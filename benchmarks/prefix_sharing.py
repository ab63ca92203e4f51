"""Prefix sharing under traffic (issue 20), engine level: Fast-dLLM v2 7B shape, random bf16, one
engine, each workload replayed with prefix sharing on and off (EngineConfig.prefix_sharing):

- system prompt: 128 requests sharing one 2,000-token system prompt, each with its own 50-token
  question, arriving one every `--interval` engine steps;
- chat: 32 four-turn conversations; each turn's prompt is the conversation so far (the earlier
  questions and answers) and a new 50-token question, sent when the previous answer is done;
- plain: the traffic of benchmarks/traffic.py (no shared prefixes): what the feature costs when
  it finds nothing.

Answers are 64 tokens (two blocks of 32), each forward finishing a sub-block of 4 (random weights
have no confident positions: a threshold every position passes). Reports tokens/s, time to first
block p50/p90 and the prefix cache hit rate; ratios on / off.

    PYTHONPATH=. python3 benchmarks/prefix_sharing.py --out-dir $OUT
    PYTHONPATH=. python3 benchmarks/prefix_sharing.py --tiny          # the same on the CPU, small model
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.gpu import FAST_DLLM_V2_7B, random_model
from benchmarks.traffic import percentile
from benchmarks.workload import traffic
from fastdllm_ray import Engine, EngineConfig, GenerationParams
from fastdllm_ray.model.fast_dllm_v2 import FastDLLMV2Config, FastDLLMV2Model

ANSWER = GenerationParams(gen_length=64, block_length=32, sub_block_length=4, threshold=1e-30, stop_at_eos=False)


def tokens(n: int, gen: torch.Generator, vocab: int) -> list[int]:
    return torch.randint(0, vocab, (n,), generator=gen).tolist()


def system_prompt_requests(n: int, system: int, question: int, interval: float, vocab: int):
    gen = torch.Generator().manual_seed(0)
    shared = tokens(system, gen, vocab)
    return [(i * interval, shared + tokens(question, gen, vocab)) for i in range(n)]


def replay(engine: Engine, requests) -> dict:
    """requests: (arrival step, prompt). Tokens/s over the replay, TTFB percentiles."""
    pending = sorted(requests, key=lambda r: r[0])
    results, steps = [], 0
    committed, start = engine.stats.committed_tokens, time.perf_counter()
    while pending or engine.has_unfinished():
        while pending and pending[0][0] <= steps:
            engine.add_request(pending.pop(0)[1], ANSWER)
        results += [o.result for o in engine.step() if o.finished]
        steps += 1
    return summary(engine, results, committed, time.perf_counter() - start)


def chat_replay(engine: Engine, conversations: int, turns: int, first: int, question: int, vocab: int) -> dict:
    """Closed loop: a conversation's next turn is sent once its last answer is done."""
    gen = torch.Generator().manual_seed(1)
    history = {str(c): tokens(first, gen, vocab) for c in range(conversations)}
    turn = {c: 1 for c in history}
    for c, prompt in history.items():
        engine.add_request(prompt, ANSWER, request_id=f"{c}:1")
    results, committed, start = [], engine.stats.committed_tokens, time.perf_counter()
    while engine.has_unfinished():
        for out in engine.step():
            if not out.finished:
                continue
            results.append(out.result)
            c = out.request_id.split(":")[0]
            if turn[c] < turns:
                turn[c] += 1
                history[c] = history[c] + out.result.token_ids + tokens(question, gen, vocab)
                engine.add_request(history[c], ANSWER, request_id=f"{c}:{turn[c]}")
    return summary(engine, results, committed, time.perf_counter() - start)


def summary(engine: Engine, results, committed0: int, seconds: float) -> dict:
    ttfb = [r.time_to_first_block for r in results]
    prompt = sum(len(r.prompt_ids) for r in results)
    return {"requests": len(results), "seconds": seconds,
            "tokens_per_s": (engine.stats.committed_tokens - committed0) / seconds,
            "ttfb_p50": percentile(ttfb, 0.5), "ttfb_p90": percentile(ttfb, 0.9),
            "hit_rate": sum(r.cached_tokens for r in results) / prompt,
            "forwards_saved": sum(r.forwards_saved for r in results)}


def markdown(rows: dict, command: str, device: str, shape: str) -> str:
    lines = [f"Device: {device}. {shape} shape, random bf16, one engine with 32 seats, answers of 64 tokens "
             "(4 a forward). Each workload run with prefix sharing on and off on the same warmed engine.", "",
             f"Command: `{command}`", "",
             "| workload | sharing | requests | tokens/s | TTFB p50 s | TTFB p90 s | prompt tokens cached | "
             "prefills skipped |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for (name, sharing), r in rows.items():
        lines.append(f"| {name} | {'on' if sharing else 'off'} | {r['requests']} | {r['tokens_per_s']:.1f} | "
                     f"{r['ttfb_p50']:.3f} | {r['ttfb_p90']:.3f} | {100 * r['hit_rate']:.1f}% | {r['forwards_saved']} |")
    lines += ["", "| workload | tokens/s on / off | TTFB p50 off / on |", "|---|---:|---:|"]
    for name in dict.fromkeys(name for name, _ in rows):
        on, off = rows[(name, True)], rows[(name, False)]
        lines.append(f"| {name} | {on['tokens_per_s'] / off['tokens_per_s']:.2f} | "
                     f"{off['ttfb_p50'] / on['ttfb_p50']:.1f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=128)
    ap.add_argument("--system", type=int, default=2000, help="system prompt tokens")
    ap.add_argument("--question", type=int, default=50, help="question tokens")
    ap.add_argument("--interval", type=float, default=2.0, help="engine steps between arrivals")
    ap.add_argument("--conversations", type=int, default=32)
    ap.add_argument("--seats", type=int, default=32)
    ap.add_argument("--tiny", action="store_true", help="a small random model on the CPU (a smoke run)")
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args()
    if args.tiny:
        config = FastDLLMV2Config(d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=128,
                                  vocab_size=1000, max_sequence_length=8192, mask_token_id=999, rope_theta=10000.0)
        torch.manual_seed(0)
        model, vocab, device, shape = FastDLLMV2Model(config).eval(), 990, "cpu", "tiny Fast-dLLM v2"
        model.end_token_ids = ()
    else:
        model, vocab, device, shape = random_model(FAST_DLLM_V2_7B, model_class=FastDLLMV2Model), 120000, \
            torch.cuda.get_device_name(), "Fast-dLLM-v2-7B"
    longest = args.system + args.question + 4 * (args.question + 64) + 256
    rows = {}
    engine = Engine(model, EngineConfig(max_num_seqs=args.seats, max_model_len=longest, max_queue=4096))
    engine.warm_up()  # one warmed engine (graphs captured once); sharing switched off for the second pass
    share_keys = engine.scheduler.prefix_keys
    for sharing in (True, False):
        engine.sharing = sharing
        engine.scheduler.prefix_keys = share_keys if sharing else None
        workloads = {
            "system prompt": lambda: replay(engine, system_prompt_requests(args.requests, args.system, args.question,
                                                                           args.interval, vocab)),
            "4-turn chat": lambda: chat_replay(engine, args.conversations, 4, args.question + 100, args.question,
                                               vocab),
            "plain traffic": lambda: replay(engine, [(r.arrival, r.prompt) for r in
                                                     traffic(args.requests, 288 / 4 / (1.25 * args.seats), (4,),
                                                             vocab=vocab, family="block")]),
        }
        for name, run in workloads.items():
            rows[(name, sharing)] = run()
            print(json.dumps({"workload": name, "sharing": sharing, **rows[(name, sharing)]}), flush=True)
    rows = {key: rows[key] for key in sorted(rows, key=lambda k: (list(dict.fromkeys(n for n, _ in rows)).index(k[0]),
                                                                   not k[1]))}
    command = "PYTHONPATH=. python3 benchmarks/prefix_sharing.py" + (" --tiny" if args.tiny else "")
    text = markdown(rows, command, device, shape)
    print(text)
    if args.out_dir:
        Path(args.out_dir, "prefix_sharing.md").write_text(text)


if __name__ == "__main__":
    main()
