"""The FP8 half of `benchmarks/gpu.py --dtype fp8`: the same configurations on the same random
weights quantized to FP8, the fp8/bf16 ratios against issue 22's bars, and how many tokens fp8
and bf16 decode alike on the random shape (reported only: random weights have no margin)."""

from __future__ import annotations

import json

import torch

from benchmarks.precision import token_agreement
from fastdllm_ray import GenerationParams, generate
from fastdllm_ray.model.fp8 import active_kernel, quantize_model

REFERENCE_TOKENS_PER_S = 22.0  # the Fast-dLLM reference, batch 1, LLaDA-8B on one GPU


def random_cases(n: int = 4, prompt: int = 128, gen: int = 128) -> tuple[list[list[int]], GenerationParams]:
    ids = torch.randint(0, 120000, (n, prompt), generator=torch.Generator().manual_seed(3)).tolist()
    return ids, GenerationParams(steps=gen, gen_length=gen, block_length=32, cache="dual", stop_at_eos=False)


def quantize_beside(model, configs: list[str], run_config, floors, budget_s: float) -> tuple[list, tuple[int, int]]:
    """Decodes the random cases in bf16, quantizes the model in place, decodes them again and runs
    every configuration in FP8. Returns the FP8 runs and (tokens equal, tokens)."""
    prompts, params = random_cases()
    before = generate(model, prompts, params)
    model.__dict__.pop("_generate_engine", None)  # its CUDA graphs read the bf16 weights
    quantize_model(model)
    after = generate(model, prompts, params)
    model.__dict__.pop("_generate_engine", None)
    runs = []
    for spec in configs:
        cache, batch, prompt, gen, *variant = spec.split(":")
        run = run_config(model, floors, cache, int(batch), int(prompt), int(gen), *variant, budget_s=budget_s)
        run.variant = f"fp8 {run.variant}"
        runs.append(run)
        print(json.dumps(run.__dict__), flush=True)
        torch.cuda.empty_cache()
    return runs, token_agreement(before, after)


def _bar(run) -> tuple[str, str]:
    """Issue 22's bar for (step, refresh) of a configuration, '' where it sets none."""
    if run.batch == 1 and run.cache == "dual":
        return "<= 0.65x", ""
    if run.batch >= 32:
        return "<= 0.75x", "<= 0.75x"
    return "", ""


def ratio_markdown(bf16_runs, fp8_runs, same_total, agree_fp8, floors, weights: tuple[int, int]) -> str:
    same, total = same_total
    lines = ["", f"### FP8 weights beside bf16 (kernel `{active_kernel()}`; FP8 matmul "
             f"{floors['fp8_flops'] / 1e12:.0f} TFLOP/s measured; weights read per forward "
             f"{weights[0] / 1e9:.2f} GB bf16, {weights[1] / 1e9:.2f} GB fp8)", "",
             "| cache | batch | prompt | gen | tokens/s bf16 / fp8 | step ms bf16 / fp8 | step fp8/bf16 | bar "
             "| refresh ms bf16 / fp8 | refresh fp8/bf16 | bar | fp8 step / its floor | peak GiB bf16 / fp8 |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---:|"]
    for a, b in zip(bf16_runs, fp8_runs):
        step_a = a.step_ms if a.step_ms == a.step_ms else a.refresh_ms
        step_b = b.step_ms if b.step_ms == b.step_ms else b.refresh_ms
        floor_b = b.floor_step_ms if b.step_ms == b.step_ms else b.floor_refresh_ms
        step_bar, refresh_bar = _bar(a)
        lines.append(f"| {a.cache} | {a.batch} | {a.prompt} | {a.gen} | {a.tokens_per_s:.1f} / {b.tokens_per_s:.1f} | "
                     f"{step_a:.2f} / {step_b:.2f} | **{step_b / step_a:.2f}x** | {step_bar} | "
                     f"{a.refresh_ms:.1f} / {b.refresh_ms:.1f} | **{b.refresh_ms / a.refresh_ms:.2f}x** | {refresh_bar} | "
                     f"{step_b / floor_b:.2f}x | {a.peak_gib:.1f} / {b.peak_gib:.1f} |")
    best = max((r for r in fp8_runs if r.batch >= 32), key=lambda r: r.tokens_per_s, default=None)
    if best is not None:
        lines += ["", f"Batch {best.batch}, one token a step, FP8: {best.tokens_per_s:.0f} tokens/s = "
                  f"{best.tokens_per_s / REFERENCE_TOKENS_PER_S:.0f}x the Fast-dLLM reference's {REFERENCE_TOKENS_PER_S:g}."]
    lines += ["", f"Random shape, fp8 vs bf16 on the same weights (4 prompts of 128, 128 tokens, dual cache, one "
              f"token a step): {same}/{total} tokens equal = {100 * same / max(total, 1):.1f}% (reported, no bar)."]
    if agree_fp8:
        lines += ["", "fp8 on the GPU vs float32 on the CPU, same settings (tokens equal / tokens):", ""]
        lines += [f"- `{d}`: {s}/{t} = {100 * s / max(t, 1):.1f}%" for d, s, t in agree_fp8]
    return "\n".join(lines) + "\n"
