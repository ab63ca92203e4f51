"""`fastdllm-ray generate "prompt"`: one answer from a model, no server, to try settings quickly.
The prompt goes through the model's chat template (as the chat endpoint does) unless --raw."""

from __future__ import annotations

import argparse
import sys
import time


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("generate", help="answer one prompt locally (no server)", description=__doc__)
    parser.add_argument("prompt", help="the user message (or plain text with --raw)")
    parser.add_argument("--model", help="checkpoint directory or HF hub id (default: the shipped tiny model)")
    parser.add_argument("--raw", action="store_true", help="no chat template: complete the text as given")
    parser.add_argument("--max-tokens", "--gen-length", type=int, dest="max_tokens",
                        help="answer tokens (default: the model's generation_config max_new_tokens, else 128)")
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--block-length", type=int, default=32)
    rule = parser.add_mutually_exclusive_group()
    rule.add_argument("--threshold", type=float, help="commit every position at least this confident")
    rule.add_argument("--factor", type=float, help="Fast-dLLM factor rule")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--remasking", choices=["low_confidence", "random"], default="low_confidence")
    parser.add_argument("--cache", choices=["none", "prefix", "dual"], default="dual")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16", "fp8"])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fastdllm_ray import GenerationParams, generate, load_model, load_tokenizer
    from fastdllm_ray.serve.convert import PromptEncoder
    from fastdllm_ray.serve.protocol import ChatMessage

    if args.model:
        path = args.model
    else:
        from fastdllm_ray.model.shipped import default_model_path

        path = str(default_model_path())
    if args.max_tokens is None:
        from fastdllm_ray.model.checkpoint import generation_config, resolve_checkpoint

        args.max_tokens = int(generation_config(resolve_checkpoint(path)).get("max_new_tokens", 128))
    try:
        padded = -(-args.max_tokens // args.block_length) * args.block_length if args.block_length > 0 else 0
        params = GenerationParams(steps=min(args.steps, max(padded, 1)), gen_length=args.max_tokens,
                                  block_length=args.block_length, threshold=args.threshold, factor=args.factor,
                                  temperature=args.temperature, remasking=args.remasking, cache=args.cache)
    except ValueError as exc:
        print(f"fastdllm-ray generate: {exc}", file=sys.stderr)
        return 2
    model = load_model(path, device=args.device, dtype=args.dtype)
    tokenizer = load_tokenizer(path)
    encoder = PromptEncoder(tokenizer, model.config.embedding_size, model.config.mask_token_id)
    prompt_ids = encoder.text(args.prompt) if args.raw else encoder.chat([ChatMessage(role="user", content=args.prompt)])
    start = time.perf_counter()
    try:
        result = generate(model, [prompt_ids], params)[0]
    except ValueError as exc:
        print(f"fastdllm-ray generate: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    print(tokenizer.decode(result.token_ids, skip_special_tokens=True))
    print(f"[{len(result.token_ids)} tokens, NFE {result.nfe}, {result.tokens_per_forward:.2f} tokens/forward, "
          f"{seconds:.2f} s, finish: {result.finish_reason}]", file=sys.stderr)
    return 0
