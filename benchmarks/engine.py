"""CPU micro-benchmark of the engine: tokens/s, NFE and ms per forward for the three cache
modes on a small random LLaDA, at batch 1 (one prompt) and batch 8 (generate() with 8 prompts).

    .venv/bin/python benchmarks/engine.py --out BENCHMARKS.md

Random weights predict near-uniformly (confidence ~1/vocab), so a threshold would never be
met; the output head is scaled (--head-scale 8) so that confidences reach 0.9. Even so, a
random network predicts the same token with the same confidence at every masked position
of a block, so threshold 0.9 commits a block either at its refresh forward or one token per
step: its NFE is a property of random weights, not a forecast for a trained model. The
per-forward costs and the one-token-per-step rows carry over. Timings are one run each
after a warm-up, wall clock, `torch.set_num_threads(2)`.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

# Before torch starts OpenMP: on a shared machine, threads that spin while waiting for each
# other steal the cores from the thread doing the work (forwards measured 10-50x slower).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from fastdllm_ray import GenerationParams, generate  # noqa: E402
from fastdllm_ray.commands.sections import update_section  # noqa: E402
from fastdllm_ray.model import LLaDAConfig, LLaDAModel  # noqa: E402

SMALL = LLaDAConfig(d_model=256, n_heads=8, n_kv_heads=8, n_layers=4, mlp_hidden_size=688, vocab_size=2048,
                    embedding_size=2048, max_sequence_length=2048, mask_token_id=2047, eos_token_id=2046)
SECTION = "engine-cpu"
POLICIES = {"step": "one token per step", "thr": "threshold 0.9"}
# prompt:gen:policy:batch. Batch 8 only at gen 64, where a no-cache row still fits the
# ~5-minute budget of a 2-core machine; every size at batch 1.
DEFAULT_CONFIGS = ("64:64:step:1,64:64:thr:1,64:64:step:8,64:64:thr:8,256:64:step:1,256:64:thr:1,256:64:thr:8,"
                   "64:256:step:1,64:256:thr:1,256:256:step:1,256:256:thr:1")


def random_model(cfg: LLaDAConfig, head_scale: float, seed: int = 0) -> LLaDAModel:
    torch.manual_seed(seed)
    model = LLaDAModel(cfg).eval().requires_grad_(False)
    with torch.no_grad():
        model.transformer["ff_out"].weight.mul_(head_scale)
    model.end_token_ids = ()  # decode every block: no early stop on random text
    return model


@dataclass
class Run:
    cache: str
    policy: str
    batch: int
    prompt: int
    gen: int
    seconds: float
    nfe: float  # forwards per request (mean)
    forwards: int  # batched forwards the engine ran
    tokens: int  # answer tokens produced, all requests

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def ms_per_forward(self) -> float:
        return 1000 * self.seconds / self.forwards


def params_for(policy: str, cache: str, gen: int) -> GenerationParams:
    threshold = 0.9 if policy == "threshold 0.9" else None
    return GenerationParams(steps=gen, gen_length=gen, block_length=32, threshold=threshold, cache=cache,
                            stop_at_eos=False)


def run(model: LLaDAModel, cache: str, policy: str, batch: int, prompt_len: int, gen: int) -> Run:
    gen_ids = torch.Generator().manual_seed(prompt_len * 1000 + batch)
    prompts = [torch.randint(0, 2000, (prompt_len,), generator=gen_ids).tolist() for _ in range(batch)]
    engine_before = getattr(model, "_generate_engine", None)
    before = engine_before.stats.model_forwards if engine_before is not None else 0
    start = time.perf_counter()
    results = generate(model, prompts, params_for(policy, cache, gen))
    seconds = time.perf_counter() - start
    return Run(cache, policy, batch, prompt_len, gen, seconds, sum(r.nfe for r in results) / batch,
               forwards_since(model, engine_before, before), sum(len(r.token_ids) for r in results))


def forwards_since(model: LLaDAModel, engine_before, before: int) -> int:
    """Batched forwards (one per engine step) of the engine generate() keeps on the model, since
    `before`; from zero when generate() had to make a new engine."""
    engine = model._generate_engine
    return engine.stats.model_forwards - (before if engine is engine_before else 0)


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def markdown(runs: list[Run], command: str, head_scale: float, load: str) -> str:
    after = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    # our own threads add about torch.get_num_threads() to the load during the run
    busy = float(load.split(" / ")[0]) > 1.0 or os.getloadavg()[0] > torch.get_num_threads() + 1.0
    lines = [
        f"CPU micro-benchmark of the engine (`benchmarks/engine.py`): random LLaDA, {SMALL.n_layers} layers, "
        f"d_model {SMALL.d_model}, {SMALL.n_heads} heads, MLP {SMALL.mlp_hidden_size}, vocab {SMALL.vocab_size}, "
        f"float32, output head x{head_scale:g} (see the script), block_length 32, stop_at_eos off.",
        "",
        f"Machine: {cpu_name()}, `nproc` = {os.cpu_count()}, "
        f"torch {torch.__version__}, torch.set_num_threads({torch.get_num_threads()}), "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load average (1/5/15 min) before the run "
        f"{load} and after it {after}; "
        "one timed run per row after a warm-up.",
        f"Command: `{command}`",
        "",
        *(["**Other work was running on the machine** (see the load averages): figures are inflated "
           "and noisy, ratios between rows included.", ""] if busy else []),
        "tokens/s counts answer tokens of all requests over wall time; NFE is forwards per request; "
        "ms/forward is wall time over the engine's batched forwards (a batch-8 forward serves 8 rows). "
        "Random weights make every masked position of a block alike, so threshold 0.9 commits a whole "
        "block at its refresh forward or one token per step: read its NFE as an artefact of random "
        "weights, its ms/forward as a cost.",
        "",
        "| prompt | gen | policy | batch | cache | tokens/s | NFE | ms/forward | speed-up vs none |",
        "|---:|---:|---|---:|---|---:|---:|---:|---:|",
    ]
    base = {(r.prompt, r.gen, r.policy, r.batch): r.tokens_per_s for r in runs if r.cache == "none"}
    for r in runs:
        ref = base.get((r.prompt, r.gen, r.policy, r.batch))
        speedup = f"{r.tokens_per_s / ref:.2f}x" if ref else "-"
        lines.append(f"| {r.prompt} | {r.gen} | {r.policy} | {r.batch} | {r.cache} | {r.tokens_per_s:,.0f} | "
                     f"{r.nfe:.1f} | {r.ms_per_forward:.1f} | {speedup} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default=DEFAULT_CONFIGS,
                    help="prompt:gen:policy:batch runs (policy step = one token per step, thr = threshold 0.9)")
    ap.add_argument("--head-scale", type=float, default=8.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="BENCHMARKS.md to write the section into")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())  # other work on the machine skews timings
    model = random_model(SMALL, args.head_scale)
    run(model, "dual", POLICIES["thr"], 1, 32, 32)  # warm-up
    runs = []
    for spec in args.configs.split(","):
        prompt_len, gen, policy, batch = spec.split(":")
        for cache in ("none", "prefix", "dual"):
            r = run(model, cache, POLICIES[policy], int(batch), int(prompt_len), int(gen))
            runs.append(r)
            print(f"prompt {r.prompt} gen {r.gen} {r.policy:18s} batch {r.batch} {cache:6s} "
                  f"{r.tokens_per_s:9.1f} tok/s  nfe {r.nfe:6.1f}  {r.ms_per_forward:7.1f} ms/fwd  "
                  f"{r.seconds:6.2f}s", flush=True)
    command = ".venv/bin/python benchmarks/engine.py" + "".join(
        f" --{k.replace('_', '-')} '{v}'" for k, v in vars(args).items()
        if k != "out" and v != ap.get_default(k)) + (f" --out {args.out}" if args.out else "")
    text = markdown(runs, command, args.head_scale, load)
    print(text)
    if args.out:
        update_section(args.out, SECTION, "## Engine on CPU (small random model)\n\n" + text)


if __name__ == "__main__":
    main()
