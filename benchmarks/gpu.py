"""GPU benchmark on an LLaDA-8B-, Dream-7B- or Fast-dLLM-v2-7B-shaped model with random bf16
weights (run through the device tool; `--shape dream-7b` for Dream: grouped K/V heads, q/k/v
biases, shifted logits; `--shape fast-dllm-v2-7b` for the block-diffusion Fast-dLLM v2: the same
Qwen2.5-7B shape, causal between blocks).

Measures, for cache none/prefix/dual (v2: `block`, or `blockcache` for its block cache) with one
token committed per step: tokens/s, ms per forward (refresh = full forward or v2's prefill, block
step separately), NFE and peak memory, and the floor of each forward from the bandwidth and bf16
matmul rate measured in the same run. `--decode-vs-block N`: a block step (32 queries) against
a one-token decode step of the same network over the same N kept positions, at batch 1.

    PYTHONPATH=. python3 benchmarks/gpu.py --out BENCHMARKS.md --plot benchmarks/gpu_throughput.png
    PYTHONPATH=. python3 benchmarks/gpu.py --shape dream-7b
    PYTHONPATH=. python3 benchmarks/gpu.py --shape fast-dllm-v2-7b --configs block:1:128:256,block:32:128:256 --decode-vs-block 1024
    PYTHONPATH=. python3 benchmarks/gpu.py --shape llada2-mini --configs quota:1:128:256,quota:32:128:256

LLaDA2.0 (`quota`: threshold 1, one position a step) is a mixture of experts: its floor counts
the weights a step reads, every weight but the routed experts plus the experts its tokens route
to (step_weight_bytes), and the FLOPs of the experts a token runs.

`--dtype fp8` runs every configuration twice in the same process, with the random bf16 weights
and then with the same weights quantized to FP8 (model/fp8.py; FASTDLLM_FP8_KERNEL picks the
kernel), and prints the fp8/bf16 ratios beside the issue's bars (batch 1 dual step <= 0.65x,
batch >= 32 step and refresh <= 0.75x), the tokens fp8 and bf16 agree on for the random shape
(reported, no bar: random weights have no margin), and the test checkpoints' agreement with
float32 in both dtypes:

    PYTHONPATH=. python3 benchmarks/gpu.py --dtype fp8 --budget 8 --configs dual:1:128:256,dual:32:128:256
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fastdllm_ray import Engine, EngineConfig, GenerationParams
from fastdllm_ray.model import DiffusionTransformer, DreamConfig, DreamModel, LLaDAConfig, LLaDAModel, PagedForward
from fastdllm_ray.model import PagedKVCache
from fastdllm_ray.model.fast_dllm_v2 import FastDLLMV2Config, FastDLLMV2Model
from fastdllm_ray.model.fp8 import is_quantized
from fastdllm_ray.model.llada2 import LLaDA2Model
from fastdllm_ray.model.llada2_config import LLaDA2Config
from fastdllm_ray.model.paged_attention import PagedBatch, query_tiles

LLADA_8B = LLaDAConfig(d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32, mlp_hidden_size=12288,
                       vocab_size=126464, embedding_size=126464, max_sequence_length=4096,
                       mask_token_id=126336, eos_token_id=126081)
# Dream-v0-Instruct-7B's config.json (Qwen2.5-7B's shape)
DREAM_7B = DreamConfig(d_model=3584, n_heads=28, n_kv_heads=4, n_layers=28, mlp_hidden_size=18944,
                       vocab_size=152064, max_sequence_length=4096, mask_token_id=151666, eos_token_id=151643,
                       rope_theta=1000000.0)
# Efficient-Large-Model/Fast_dLLM_v2_7B: Qwen2.5-7B-Instruct's shape, |<MASK>| = 151665
FAST_DLLM_V2_7B = FastDLLMV2Config(d_model=3584, n_heads=28, n_kv_heads=4, n_layers=28, mlp_hidden_size=18944,
                                   vocab_size=152064, max_sequence_length=4096, mask_token_id=151665,
                                   eos_token_id=151645, rope_theta=1000000.0, bd_size=32)
# inclusionAI/LLaDA2.0-mini: 16B parameters, 256 experts of 512 per MoE layer, 8 per token (1.4B active)
LLADA2_MINI = LLaDA2Config.from_dict({
    "model_type": "llada2_moe", "hidden_size": 2048, "num_attention_heads": 16, "num_key_value_heads": 4,
    "head_dim": 128, "num_hidden_layers": 20, "intermediate_size": 5120, "moe_intermediate_size": 512,
    "num_experts": 256, "num_experts_per_tok": 8, "n_group": 8, "topk_group": 4, "num_shared_experts": 1,
    "first_k_dense_replace": 1, "routed_scaling_factor": 2.5, "partial_rotary_factor": 0.5, "vocab_size": 157184,
    "max_position_embeddings": 8192, "mask_token_id": 156895, "eos_token_id": 156892, "rope_theta": 600000})
SHAPES = {"llada-8b": ("LLaDA-8B", LLADA_8B, LLaDAModel), "dream-7b": ("Dream-7B", DREAM_7B, DreamModel),
          "fast-dllm-v2-7b": ("Fast-dLLM-v2-7B", FAST_DLLM_V2_7B, FastDLLMV2Model),
          "llada2-mini": ("LLaDA2.0-mini", LLADA2_MINI, LLaDA2Model)}
DEFAULT_AGREEMENT = {"llada-8b": "tests/fixtures/refdata/checkpoint,fastdllm_ray/assets/tiny-llada-arith",
                     "dream-7b": "tests/fixtures/refdata-dream/checkpoint",
                     "fast-dllm-v2-7b": "tests/fixtures/refdata-v2/checkpoint",
                     "llada2-mini": "tests/fixtures/refdata-llada2/checkpoint"}
BLOCK_DIFFUSION_CACHES = {"block": False, "blockcache": True}  # v2: its block cache off / on


def params_for(cache: str, gen: int, block: int) -> GenerationParams:
    """One token committed per forward: LLaDA/Dream's fixed schedule of gen steps, v2 at
    threshold 1 (its most confident position only), LLaDA2.0 (`quota`) at threshold 1 with a
    quota of one a step."""
    if cache == "quota":
        return GenerationParams(gen_length=gen, block_length=block, threshold=1.0, steps_per_block=block,
                                stop_at_eos=False)
    if cache in BLOCK_DIFFUSION_CACHES:
        return GenerationParams(gen_length=gen, block_length=block, block_cache=BLOCK_DIFFUSION_CACHES[cache],
                                threshold=1.0, stop_at_eos=False)
    return GenerationParams(steps=gen, gen_length=gen, block_length=block, cache=cache, stop_at_eos=False)


def random_model(cfg, device: str = "cuda", model_class=LLaDAModel) -> DiffusionTransformer:
    with torch.device("meta"):
        model = model_class(cfg)
    model = model.to_empty(device=device).to(torch.bfloat16).eval().requires_grad_(False)
    gen = torch.Generator(device=device).manual_seed(0)
    for name, p in model.named_parameters():
        if name.endswith(("norm.weight", "ln_f.weight", "layernorm.weight")):
            p.fill_(1.0)
        else:
            p.normal_(0.0, 0.02, generator=gen)
    model.end_token_ids = ()  # random weights: decode every block (no early stop)
    return model


def timed(fn, repeats: int = 10) -> float:
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def measure_floors() -> dict:
    n = 1 << 30  # 2 GiB of bf16
    src = torch.empty(n, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    copy_s = timed(lambda: dst.copy_(src))
    bandwidth = 2 * n * 2 / copy_s  # bytes read + written per second
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    mm_s = timed(lambda: a @ b)
    a8, b8, one = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn), torch.ones((), device="cuda")
    fp8_s = timed(lambda: torch._scaled_mm(a8, b8.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16))
    return {"bandwidth": bandwidth, "flops": 2 * 8192**3 / mm_s, "fp8_flops": 2 * 8192**3 / fp8_s}


def weight_bytes(model: DiffusionTransformer) -> int:
    """Bytes of every weight but the embedding (a gather reads only its tokens' rows), each storage
    once: fused projections and their layers' views share one; FP8 weights are buffers."""
    skip = model.embedding.weight.untyped_storage().data_ptr()
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in list(model.parameters()) + list(model.buffers())}
    storages.pop(skip, None)
    return sum(storages.values())


def step_weight_bytes(model: DiffusionTransformer, tokens: int) -> int:
    """Weight bytes a forward of `tokens` tokens reads: every weight but the routed experts, plus
    the experts its tokens route to (counted by routing that many random tokens through the
    model: with random weights routing is near uniform, so this is the expected touched set)."""
    experts = [m for m in model.modules() if type(m).__name__ == "GroupedExperts"]
    if not experts:
        return weight_bytes(model)
    touched: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: touched.append(out[0].unique().numel()))
             for m in model.modules() if type(m).__name__ == "Router"]
    with torch.inference_mode():
        model(torch.randint(0, 120000, (1, tokens), device="cuda"))
    for hook in hooks:
        hook.remove()
    per_expert = sum(p[0].numel() * p.element_size() for p in experts[0].parameters())
    all_experts = sum(p.numel() * p.element_size() for m in experts for p in m.parameters())
    return weight_bytes(model) - all_experts + per_expert * sum(touched)


def forward_cost(cfg, batch: int, q_len: int, kv_len: int, n_logits: int, weights: int):
    """(bytes, flops) of one batched forward: weights + K/V read; matmuls + attention.
    K/V are n_kv_heads x head_dim wide (grouped-query attention: narrower than d_model)."""
    kv_dim = cfg.n_kv_heads * cfg.head_dim
    mlp = cfg.mlp_hidden_size
    if hasattr(cfg, "num_experts"):  # a mixture of experts: a token runs its experts and the shared one
        moe_layers = cfg.n_layers - cfg.first_k_dense_replace
        active = (cfg.num_experts_per_tok + cfg.num_shared_experts) * cfg.moe_intermediate_size
        mlp = (cfg.first_k_dense_replace * mlp + moe_layers * active) / cfg.n_layers
    q_dim = cfg.n_heads * cfg.head_dim
    per_token_linear = 2 * cfg.d_model * q_dim + 2 * cfg.d_model * kv_dim + 3 * cfg.d_model * mlp
    flops = 2 * batch * (q_len * per_token_linear * cfg.n_layers + n_logits * cfg.d_model * cfg.embedding_size)
    flops += 4 * batch * cfg.n_layers * q_len * kv_len * q_dim
    kv_bytes = batch * kv_len * cfg.n_layers * 2 * kv_dim * 2
    return weights + kv_bytes, flops


@dataclass
class Run:
    variant: str
    cache: str
    batch: int
    prompt: int
    gen: int
    tokens_per_s: float
    refresh_ms: float
    step_ms: float
    nfe: int
    peak_gib: float
    floor_step_ms: float
    floor_refresh_ms: float
    complete: bool


VARIANTS = {"eager": (False, False), "graphs": (True, False), "compiled": (True, True), "nographs": (False, True)}


def run_config(model, floors, cache, batch, prompt, gen, variant="compiled", block=32, budget_s=25.0) -> Run:
    cfg = model.config
    params = params_for(cache, gen, block)
    graphs, compiled = VARIANTS[variant]
    model.compile_blocks(compiled)
    engine = Engine(model, EngineConfig(max_num_seqs=batch, max_model_len=prompt + gen, max_queue=batch,
                                        cuda_graphs=graphs, compile_blocks=compiled))
    engine.warm_up()  # graph captures and compilation stay out of the timed run, as on a served replica
    gen_ = torch.Generator().manual_seed(1)
    for _ in range(batch):
        ids = torch.randint(0, 120000, (prompt,), generator=gen_).tolist()
        engine.add_request(ids, params)
    torch.cuda.reset_peak_memory_stats()
    times: dict[str, list[float]] = {"full": [], "step": []}
    committed = 0
    start = time.perf_counter()
    complete = True
    while engine.has_unfinished():
        before = dict(engine.stats.forwards)
        t0 = time.perf_counter()
        outs = engine.step()
        elapsed_step = time.perf_counter() - t0
        kinds = {k for k, n in engine.stats.forwards.items() if n > before.get(k, 0)}
        times["full" if kinds & {"full", "prefill"} else "step"].append(elapsed_step)
        committed = engine.stats.committed_tokens
        if time.perf_counter() - start > budget_s and any(o.token_ids for o in outs):
            complete = False  # stop at a block boundary; throughput from what ran
            break
    elapsed = time.perf_counter() - start
    nfe = engine.stats.rows // batch
    kv = prompt + gen
    step_queries = block if cache in ("dual", "quota", *BLOCK_DIFFUSION_CACHES) else kv // 2
    s_bytes, s_flops = forward_cost(cfg, batch, step_queries, kv, block, step_weight_bytes(model, batch * step_queries))
    f_bytes, f_flops = forward_cost(cfg, batch, kv, kv, block, step_weight_bytes(model, batch * kv))
    rate = floors["fp8_flops"] if is_quantized(model) else floors["flops"]  # FP8 tensor cores do the linears
    floor = lambda b, f: 1e3 * max(b / floors["bandwidth"], f / rate)  # noqa: E731
    median = lambda xs: sorted(xs)[len(xs) // 2] * 1e3 if xs else float("nan")  # noqa: E731
    return Run(variant, cache, batch, prompt, gen, committed / elapsed, median(times["full"]), median(times["step"]),
               nfe, torch.cuda.max_memory_allocated() / 2**30, floor(s_bytes, s_flops), floor(f_bytes, f_flops),
               complete)


def decode_vs_block(model, context: int, repeats: int = 50) -> dict:
    """ms of one block step (32 queries, the logits of a sub-block of 8) against one decode step
    (1 query, its logits) over the same `context` kept positions at batch 1, each the engine's
    paged forward captured as one CUDA graph: what deciding a block in parallel costs per forward
    over what an autoregressive model pays for one token."""
    cfg = model.config
    model.compile_blocks(True)
    page = 64
    pages = -(-(context + 32) // page)
    cache = PagedKVCache(cfg.n_layers, pages, page, cfg.n_kv_heads, cfg.head_dim, model.dtype, "cuda")
    table = torch.arange(pages, dtype=torch.int32, device="cuda")[None]
    out = {}
    for name, q_len, n_logits in (("block", 32, 8), ("decode", 1, 1)):
        positions = torch.arange(context - q_len, context, device="cuda")
        tokens = torch.randint(0, 120000, (q_len,), device="cuda")
        cu_q = torch.tensor([0, q_len], dtype=torch.int32, device="cuda")
        tile_row, tile_start = query_tiles(cu_q, 2)
        batch = PagedBatch(cu_q, torch.tensor([context], dtype=torch.int32, device="cuda"), table, page, tile_row,
                           tile_start, q_start=positions[:1].int(), causal=torch.zeros(1, dtype=torch.int32, device="cuda"))
        paged = PagedForward(cache, (positions // page) * page + positions % page, batch)

        def step():
            return model.logits(model.hidden_states(tokens, positions, paged)[-n_logits:])

        for _ in range(3):
            step()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        times = []
        for _ in range(repeats):
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            graph.replay()
            end.record()
            torch.cuda.synchronize()
            times.append(begin.elapsed_time(end))
        out[name] = sorted(times)[len(times) // 2]
    out["ratio"] = out["block"] / out["decode"]
    out["context"] = context
    return out


def staggered(model, requests: int, variant: str, max_num_seqs: int = 16, block: int = 32) -> dict:
    """Unaligned traffic: prompts of 64-256 tokens, answers of 64/128/256 tokens decoded in 20, 24,
    28 or 32 steps per block (dual cache), through `max_num_seqs` slots: sequences start and end
    blocks at different steps, so batch shapes keep changing: what CUDA graphs cost when shapes churn."""
    graphs, compiled = VARIANTS[variant]
    model.compile_blocks(compiled)
    engine = Engine(model, EngineConfig(max_num_seqs=max_num_seqs, max_model_len=256 + 256, max_queue=requests,
                                        cuda_graphs=graphs, compile_blocks=compiled))
    gen_ = torch.Generator().manual_seed(2)
    for i in range(requests):
        prompt = int(torch.randint(64, 257, (1,), generator=gen_))
        gen, per_block = (64, 128, 256)[i % 3], (32, 24, 20, 28)[i % 4]
        engine.add_request(torch.randint(0, 120000, (prompt,), generator=gen_).tolist(),
                           GenerationParams(steps=per_block * gen // block, gen_length=gen, block_length=block, cache="dual",
                                            stop_at_eos=False))
    start, steps = time.perf_counter(), 0
    while engine.has_unfinished():
        engine.step()
        steps += 1
    elapsed = time.perf_counter() - start
    captures = engine.runner.graphs.captures if engine.runner.graphs is not None else 0
    return {"variant": variant, "requests": requests, "tokens_per_s": engine.stats.committed_tokens / elapsed,
            "seconds": elapsed, "engine_steps": steps, "graph_captures": captures}


def agreement(model_dirs: list[str], dtype=torch.bfloat16) -> list[tuple[str, int, int]]:
    """Tokens equal between float32 on the CPU and `dtype` on the GPU, per checkpoint."""
    from benchmarks.precision import token_agreement
    from fastdllm_ray import generate, load_model
    from fastdllm_ray.model import load_tokenizer

    rows = []
    for directory in model_dirs:
        cpu = load_model(directory, device="cpu", dtype=torch.float32)
        gpu = load_model(directory, device="cuda", dtype=dtype)
        prompts, params = _agreement_cases(directory, cpu, load_tokenizer)
        same, total = token_agreement(generate(cpu, prompts, params), generate(gpu, prompts, params))
        rows.append((directory, same, total))
    return rows


def _agreement_cases(directory, model, load_tokenizer):
    ref = Path(directory).parent / "reference.json"
    if ref.exists():  # the reference's tiny random checkpoint: its own cases, no tokenizer
        cases = json.loads(ref.read_text())["cases"]
        if "max_new_tokens" in cases[0]:  # Fast-dLLM v2's: its stop id is part of the reference
            return [c["prompt"] for c in cases], [GenerationParams(
                gen_length=c["max_new_tokens"], block_length=c["block_size"], sub_block_length=c["small_block_size"],
                threshold=c["threshold"], block_cache=c["use_block_cache"]) for c in cases]
        model.end_token_ids = ()
        return [c["prompt"] for c in cases], [GenerationParams(
            steps=c["steps"], gen_length=c["gen_length"], block_length=c.get("block_length", c["gen_length"]),
            threshold=c.get("threshold"), factor=c.get("factor"), alg=c.get("alg"), cache=c["cache"],
            stop_at_eos=False) for c in cases]
    tok = load_tokenizer(directory)
    questions = [f"What is {a}+{b}?" for a, b in [(23, 58), (7, 5), (120, 33), (64, 64), (9, 91), (45, 17)]]
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)
               for q in questions]
    prompts = [list(p["input_ids"]) if isinstance(p, dict) or hasattr(p, "keys") else list(p) for p in prompts]
    settings = [GenerationParams(steps=64, gen_length=64, block_length=32, cache=c, threshold=t)
                for c in ("none", "dual") for t in (None, 0.9)]
    return [p for p in prompts for _ in settings], [q for _ in prompts for q in settings]


def markdown(runs: list[Run], floors: dict, device: str, command: str, agree, churn=(), shape="LLaDA-8B") -> str:
    lines = [f"Device: {device}; measured copy bandwidth {floors['bandwidth'] / 1e12:.2f} TB/s (read+write), "
             f"bf16 matmul {floors['flops'] / 1e12:.0f} TFLOP/s. {shape} shape, random bf16 weights, "
             "block 32, one token per step (steps = gen), stop_at_eos off. Floor = max(bytes / bandwidth, "
             "FLOPs / matmul rate) of one forward. `compiled` = CUDA graphs + torch.compile'd block math + "
             "fused projections; `graphs` = CUDA graphs only; `eager` = neither.", "",
             f"Command: `{command}`", "",
             "| variant | cache | batch | prompt | gen | tokens/s | refresh ms | step ms | step floor ms "
             "| step / floor | NFE | peak GiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        step = r.step_ms if r.step_ms == r.step_ms else r.refresh_ms  # no cache: every forward is full
        floor = r.floor_step_ms if r.step_ms == r.step_ms else r.floor_refresh_ms
        lines.append(f"| {r.variant} | {r.cache} | {r.batch} | {r.prompt} | {r.gen} | {r.tokens_per_s:.1f} | "
                     f"{r.refresh_ms:.1f} | {step:.2f} | {floor:.2f} | {step / floor:.2f}x | {r.nfe}"
                     f"{'' if r.complete else '*'} | {r.peak_gib:.1f} |")
    lines += ["", "`*`: stopped at a block boundary after the time budget; tokens/s is over the blocks run.",
              "For `none`, the step columns show the full forward (every step is one)."]
    if churn:
        lines += ["", f"Unaligned traffic (`staggered`: {churn[0]['requests']} requests, prompts 64-256, answers "
                  "64/128/256 in 20-32 steps per block, dual cache, 16 slots; `nographs` = compiled blocks without CUDA graphs):", "",
                  "| variant | tokens/s | seconds | engine steps | graph captures |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {c['variant']} | {c['tokens_per_s']:.1f} | {c['seconds']:.1f} | {c['engine_steps']} | "
                  f"{c['graph_captures']} |" for c in churn]
    if agree:
        lines += ["", "bf16 on the GPU vs float32 on the CPU, same settings (tokens equal / tokens):", ""]
        lines += [f"- `{d}`: {same}/{total} = {100 * same / max(total, 1):.1f}%" for d, same, total in agree]
    return "\n".join(lines) + "\n"


def plot(runs: list[Run], path: str, shape: str = "LLaDA-8B") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for cache in ("dual", "prefix", "none"):
        pts = sorted((r.batch, r.tokens_per_s) for r in runs
                     if r.cache == cache and r.variant == "compiled" and r.gen == 256)
        if pts:
            ax.plot(*zip(*pts), marker="o", label=f"{cache} cache")
    ax.axhline(22, color="gray", linestyle="--", label="reference, batch 1 (22 tok/s)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch (concurrent sequences)")
    ax.set_ylabel("generated tokens/s")
    ax.set_title(f"{shape} shape on one GPU, prompt 128, gen 256")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser()
    default_configs = ("dual:1:128:256:eager,dual:1:128:256:graphs,dual:1:128:256,"
                    "prefix:1:128:256,none:1:128:256,dual:8:128:256,dual:32:128:256,dual:64:128:256,"
                    "prefix:8:128:256,prefix:32:128:256,none:8:128:256,none:32:128:256,"
                    "dual:1:512:1024,prefix:1:512:1024,none:1:512:1024,dual:8:512:1024,prefix:8:512:1024")
    ap.add_argument("--configs", default=default_configs, help="cache:batch:prompt:gen[:variant], comma-separated")
    ap.add_argument("--budget", type=float, default=25.0, help="seconds per configuration at most")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llada-8b")
    ap.add_argument("--agreement", default=None, help="checkpoints to compare bf16 GPU with float32 CPU on "
                                                      "(default: the shape's family's test checkpoints)")
    ap.add_argument("--staggered", type=int, default=0,
                    help="also run N requests of unaligned traffic with and without CUDA graphs")
    ap.add_argument("--decode-vs-block", type=int, default=0, metavar="CONTEXT",
                    help="also time a block step against a one-token decode step over CONTEXT kept positions")
    ap.add_argument("--dtype", choices=["bf16", "fp8"], default="bf16",
                    help="fp8: every configuration also with the weights quantized to FP8, ratios to bf16")
    ap.add_argument("--out-dir", default=None, help="write gpu.md (a BENCHMARKS.md section) and a PNG here")
    args = ap.parse_args()
    floors = measure_floors()
    shape, shape_config, model_class = SHAPES[args.shape]
    model = random_model(shape_config, model_class=model_class)
    device = torch.cuda.get_device_name()
    print(f"device {device}  copy bandwidth {floors['bandwidth'] / 1e12:.2f} TB/s  "
          f"bf16 matmul {floors['flops'] / 1e12:.0f} TFLOP/s  weights {weight_bytes(model) / 1e9:.1f} GB", flush=True)
    runs = []
    for spec in args.configs.split(","):
        cache, batch, prompt, gen, *variant = spec.split(":")
        run = run_config(model, floors, cache, int(batch), int(prompt), int(gen), *variant, budget_s=args.budget)
        runs.append(run)
        print(json.dumps(run.__dict__), flush=True)
        torch.cuda.empty_cache()
    versus = decode_vs_block(model, args.decode_vs_block) if args.decode_vs_block else None
    if versus:
        print(json.dumps(versus), flush=True)
    churn = []
    if args.staggered:
        for variant in ("compiled", "compiled", "nographs"):  # the first pass compiles; the second is timed
            churn.append(staggered(model, args.staggered, variant))
            print(json.dumps(churn[-1]), flush=True)
        churn = churn[1:]
    fp8_text = ""
    if args.dtype == "fp8":
        from benchmarks.gpu_fp8 import quantize_beside, ratio_markdown

        bf16_bytes = weight_bytes(model)
        fp8_runs, same_total = quantize_beside(model, args.configs.split(","), run_config, floors, args.budget)
        fp8_weights = (bf16_bytes, weight_bytes(model))
    del model
    torch.cuda.empty_cache()
    agreement_dirs = args.agreement if args.agreement is not None else DEFAULT_AGREEMENT[args.shape]
    dirs = [d for d in agreement_dirs.split(",") if d and Path(d, "config.json").exists()]
    agree = agreement(dirs)
    if args.dtype == "fp8":
        fp8_text = ratio_markdown(runs, fp8_runs, same_total, agreement(dirs, dtype="fp8"), floors, fp8_weights)
    command = "PYTHONPATH=. python3 benchmarks/gpu.py" + (f" --budget {args.budget:g}" if args.budget != 25 else "")
    command += f" --shape {args.shape}" if args.shape != "llada-8b" else ""
    command += f" --staggered {args.staggered}" if args.staggered else ""
    command += f" --configs {args.configs}" if args.configs != default_configs else ""
    command += f" --decode-vs-block {args.decode_vs_block}" if args.decode_vs_block else ""
    command += " --dtype fp8" if args.dtype == "fp8" else ""
    text = markdown(runs, floors, device, command, agree, churn, shape) + fp8_text
    if versus:
        text += (f"\nBlock step vs decode step, batch 1, {versus['context']} kept positions, each one CUDA graph: "
                 f"32 queries (+ 8 positions' logits) {versus['block']:.2f} ms, 1 query (+ its logits) "
                 f"{versus['decode']:.2f} ms: {versus['ratio']:.2f}x.\n")
    print(text)
    if args.out_dir:
        Path(args.out_dir, "gpu.md").write_text(text)
        plot(runs, str(Path(args.out_dir, f"gpu_throughput{'' if args.shape == 'llada-8b' else '_' + args.shape}.png")),
             shape)


if __name__ == "__main__":
    main()
