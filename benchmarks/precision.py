"""Token agreement between float32 and a lower precision (bf16 by default) on the shipped,
trained model: the same held-out problems and settings, decoded twice.

    .venv/bin/python benchmarks/precision.py --out BENCHMARKS.md                  # CPU float32 vs CPU bf16
    PYTHONPATH=. python3 benchmarks/precision.py --device cuda --out BENCHMARKS.md  # CPU float32 vs GPU bf16
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from fastdllm_ray import GenerationParams, generate, load_model, load_tokenizer
from fastdllm_ray.commands.sections import update_section
from fastdllm_ray.model.shipped import default_model_path
from fastdllm_ray.train.data import problems

SETTINGS = [("none", None), ("dual", None), ("dual", 0.9)]


def token_agreement(reference, other) -> tuple[int, int]:
    """(tokens equal at the same position, tokens in the longer answer), summed over results."""
    same = sum(x == y for a, b in zip(reference, other) for x, y in zip(a.token_ids, b.token_ids))
    total = sum(max(len(a.token_ids), len(b.token_ids)) for a, b in zip(reference, other))
    return same, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="where the lower precision runs (float32 runs on the CPU)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    ap.add_argument("--problems", type=int, default=100)
    ap.add_argument("--out", type=Path, help="BENCHMARKS.md to write the `precision` section into")
    args = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    path = default_model_path()
    tok = load_tokenizer(path)
    reference_model = load_model(path, device="cpu", dtype=torch.float32)
    low_model = load_model(path, device=args.device, dtype=getattr(torch, args.dtype))
    questions = [p.question for p in problems(args.problems, 1234, "eval")]
    prompts = [list(tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                            tokenize=True, return_dict=True)["input_ids"]) for q in questions]
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "CPU"
    lines = [f"Shipped model, {len(prompts)} held-out problems (seed 1234), answers of 64 tokens, block 32: "
             f"float32 on the CPU vs {args.dtype} on {args.device} ({where}).", "",
             f"Command: `.venv/bin/python benchmarks/precision.py --device {args.device} --dtype {args.dtype}`", "",
             "| cache | rule | tokens equal | agreement |", "|---|---|---:|---:|"]
    for cache, threshold in SETTINGS:
        params = GenerationParams(steps=64, gen_length=64, block_length=32, cache=cache, threshold=threshold)
        same, total = token_agreement(generate(reference_model, prompts, params), generate(low_model, prompts, params))
        rule = f"threshold {threshold}" if threshold else "one token per step"
        lines.append(f"| {cache} | {rule} | {same}/{total} | {100 * same / max(total, 1):.1f}% |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        update_section(args.out, f"precision-{args.device.split(':')[0]}",
                       f"## Precision: float32 vs {args.dtype} ({args.device})\n\n" + text)


if __name__ == "__main__":
    main()
