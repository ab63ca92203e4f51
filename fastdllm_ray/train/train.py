"""Trains a shipped tiny model (recipes.py: `tiny-llada-arith`, `tiny-dream-arith`) on the
synthetic chat of data.py (single questions of every task) and chats.py (conversations of
1-4 turns), with its family's masked-diffusion objective (objectives.py), on the CPU in minutes.

    fastdllm-ray train --model tiny-llada-arith --out /tmp/tiny-llada-arith
    fastdllm-ray train --model tiny-dream-arith --out /tmp/tiny-dream-arith

Seeded: the data, the initial weights, the batches and the masks are the same for a seed;
the float sums of a run depend on the machine's kernels, so two machines agree closely, not
to the bit.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch

from fastdllm_ray.model import load_tokenizer, save_checkpoint
from fastdllm_ray.train import chats, data
from fastdllm_ray.train.batches import LengthBatches, encode
from fastdllm_ray.train.config import TrainConfig, add_arguments
from fastdllm_ray.train.objectives import OBJECTIVES, train_forward
from fastdllm_ray.train.recipes import ANSWER_LENGTH, RECIPES, init_weights

__all__ = ["TrainConfig", "add_arguments", "train"]


def learning_rate(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def training_chats(cfg: TrainConfig) -> list[chats.Chat]:
    """The pool: conversations and single questions (as one-turn chats), training split only."""
    n_chats = round(cfg.num_examples * cfg.chat_fraction)
    singles = [chats.Chat((p,)) for p in data.problems(cfg.num_examples - n_chats, cfg.seed, "train")]
    pool = singles + chats.chats(n_chats, cfg.seed, "train")
    random.Random(cfg.seed).shuffle(pool)
    return pool


def train(cfg: TrainConfig, out: Path, device: str = "cpu") -> torch.nn.Module:
    if cfg.model not in RECIPES:
        raise ValueError(f"model: {cfg.model!r} is not one of {sorted(RECIPES)}")
    recipe = RECIPES[cfg.model]
    out.mkdir(parents=True, exist_ok=True)
    recipe.save_tokenizer(out)
    tokenizer = load_tokenizer(out)  # everything below reads the tokenizer the checkpoint ships
    model = init_weights(recipe.build_model(tokenizer), cfg.seed)
    if cfg.init_from:
        _load_weights(model, cfg.init_from)
    model = model.to(device)
    print(f"{cfg.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters", flush=True)
    objective = OBJECTIVES[recipe.objective]
    if cfg.steps:
        started = time.time()
        rows, prompt_lens = encode(tokenizer, training_chats(cfg), ANSWER_LENGTH, recipe.end_token,
                                   recipe.pad_token)
        batches = LengthBatches(rows, prompt_lens, tokenizer.convert_tokens_to_ids(recipe.pad_token),
                                cfg.batch_size, cfg.seed)
        print(f"data: {len(rows)} examples, {sum(map(len, rows)) / len(rows):.0f} tokens on average, "
              f"in {time.time() - started:.0f}s", flush=True)
        _loop(cfg, model, objective, batches, device)
    model.eval()
    save_checkpoint(model, out, dtype=torch.bfloat16)
    generation = {"max_new_tokens": ANSWER_LENGTH}
    if recipe.objective in ("dream", "fast_dllm_v2"):  # as their own generation_config.json files
        config = model.config
        generation.update(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                          pad_token_id=config.pad_token_id)
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    return model


def _load_weights(model: torch.nn.Module, source: str) -> None:
    """The weights of a checkpoint of the same network and vocabulary, as float32: one of the
    same recipe, or of another family with the same layout (tiny-v2-arith from tiny-dream-arith,
    as Fast-dLLM v2 starts from Qwen2.5)."""
    from fastdllm_ray.model import load_model
    from fastdllm_ray.model.shipped import resolve_shipped

    trained = load_model(resolve_shipped(source), dtype=torch.float32)
    shapes = lambda m: {name: tuple(t.shape) for name, t in m.state_dict().items()}  # noqa: E731
    if shapes(trained) != shapes(model) or trained.config.mask_token_id != model.config.mask_token_id:
        raise ValueError(f"init_from: {source} is not a checkpoint of this recipe's network and vocabulary")
    model.load_state_dict(trained.state_dict())


def _loop(cfg: TrainConfig, model, objective, batches: LengthBatches, device: str) -> None:
    cuda = device.startswith("cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay,
                                  fused=cuda)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    # compiled on the GPU (norms, RoPE and SwiGLU fused; the batches' widths vary, so dynamic shapes)
    forward = torch.compile(train_forward, dynamic=True) if cfg.compile and cuda else train_forward
    started = time.time()
    warm, asked = started, cfg.steps
    for step in range(asked):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step)
        tokens, prompt_lens = batches.next()
        args = (model, tokens.to(device), prompt_lens.to(device), ANSWER_LENGTH, generator)
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=bool(cfg.bf16)):
            try:
                loss = objective(*args, forward=forward)
            except Exception as exc:  # a compiler failure costs speed, not the run
                if step or forward is train_forward:
                    raise
                print(f"torch.compile failed ({type(exc).__name__}: {exc}); training eagerly", flush=True)
                forward = train_forward
                loss = objective(*args, forward=forward)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            print(f"step {step} loss {loss.item():.4f} lr {learning_rate(cfg, step):.2e} "
                  f"{time.time() - started:.0f}s", flush=True)
        if step == 10:
            warm = time.time()  # first-call costs are behind us
        if step in (60, 300) and cfg.max_minutes is not None:
            # fit the run into the time given, with the learning-rate schedule intact;
            # rerunning with --steps set to the printed number reproduces it
            per_step = (time.time() - warm) / (step - 10)  # refitted at step 300: the first steps run slower
            fitting = step + 1 + int((60 * cfg.max_minutes - (time.time() - started)) / per_step)
            fitted = min(asked, max(fitting, step + 2))
            if fitted != cfg.steps:
                cfg.steps = fitted
                print(f"--max-minutes {cfg.max_minutes}: training for --steps {cfg.steps} "
                      f"({1000 * per_step:.0f} ms a step)", flush=True)
        if step + 1 >= cfg.steps:
            break
    print(f"trained {cfg.steps} steps in {(time.time() - started) / 60:.1f} min", flush=True)


def run(args) -> int:
    cfg = TrainConfig(**{name: getattr(args, name) for name in asdict(TrainConfig())})
    print(cfg, flush=True)
    started = time.time()
    train(cfg, args.out, args.device)
    print(f"wrote {args.out} in {(time.time() - started) / 60:.1f} min", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
