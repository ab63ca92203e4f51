"""Trains the shipped tiny LLaDA (`tiny-llada-arith`) on the synthetic chat tasks of data.py.

The LLaDA SFT objective: each example is a chat prompt followed by an answer of
ANSWER_LENGTH tokens (the worked answer, <|eot_id|>, then <|endoftext|> padding so the model
learns where to stop). A ratio t ~ U(0, 1) is drawn per example, every answer token is
masked with probability t (the prompt never), and the loss is the cross-entropy on the
masked tokens weighted by 1/t, over full bidirectional attention.

    PYTHONPATH=. python -m fastdllm_ray.train.train --out /tmp/tiny-llada-arith          # GPU
    python -m fastdllm_ray.train.train --steps 0 --out fastdllm_ray/assets/tiny-llada-arith  # random init

Seeded: the data, the initial weights and the masks are reproducible for a seed (bit
equality on the GPU is not promised: its kernels sum in a varying order).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fastdllm_ray.model import LLaDAConfig, LLaDAModel, save_checkpoint
from fastdllm_ray.model.llada import rope_tables
from fastdllm_ray.train import data
from fastdllm_ray.train.tokenizer import CHARACTERS, EOS, EOT, MASK, SPECIAL_TOKENS, build_tokenizer, save_tokenizer
from fastdllm_ray.train.tokenizer import user_prompt

ANSWER_LENGTH = 64  # two blocks of 32; every worked answer + <|eot_id|> fits


@dataclass
class TrainConfig:
    seed: int = 0
    steps: int = 12000
    batch_size: int = 512
    lr: float = 1e-3
    min_lr: float = 2e-5
    warmup_steps: int = 300
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    num_examples: int = 1_000_000  # the pool batches are drawn from
    max_minutes: float | None = None  # fewer steps (printed) when the run would take longer
    log_every: int = 200
    compile: int = 1  # torch.compile the forward on the GPU


def model_config() -> LLaDAConfig:
    """~2.9M parameters: 5.8 MB in bfloat16."""
    vocab = build_tokenizer().get_vocab()
    return LLaDAConfig(
        d_model=192, n_heads=6, n_kv_heads=6, n_layers=6, mlp_hidden_size=576,
        vocab_size=len(vocab), embedding_size=len(vocab), max_sequence_length=512,
        mask_token_id=vocab[MASK], eos_token_id=vocab[EOS], extra_end_token_ids=(vocab[EOT],),
        rope_theta=10000.0,
    )


def init_model(config: LLaDAConfig, seed: int) -> LLaDAModel:
    """GPT-2 style init: N(0, 0.02), residual outputs scaled down by depth."""
    torch.manual_seed(seed)
    model = LLaDAModel(config)
    for name, param in model.named_parameters():
        if param.dim() == 2:
            residual = ".blocks." in name and name.endswith(("attn_out.weight", "ff_out.weight"))
            torch.nn.init.normal_(param, 0.0, 0.02 / math.sqrt(2 * config.n_layers) if residual else 0.02)
    return model


def encode(problems: list[data.Problem]) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens [N, T] (prompt, answer region, then padding) and prompt lengths [N]."""
    vocab = build_tokenizer().get_vocab()
    table = np.zeros(128, dtype=np.int64)  # ASCII code -> token id
    for ch in CHARACTERS:
        table[ord(ch)] = vocab[ch]
    prefix, suffix = user_prompt("\0").split("\0")

    def ids(text: str) -> np.ndarray:
        out, rest = [], text
        for special in SPECIAL_TOKENS:  # only the template's specials occur here
            rest = rest.replace(special, f"\x01{vocab[special]}\x01")
        for i, piece in enumerate(rest.split("\x01")):
            if i % 2:
                out.append(np.array([int(piece)]))
            elif piece:
                out.append(table[np.frombuffer(piece.encode("ascii"), dtype=np.uint8)])
        return np.concatenate(out)

    prefix_ids, suffix_ids = ids(prefix), ids(suffix)
    rows, prompt_lens = [], []
    for problem in problems:
        prompt = np.concatenate([prefix_ids, ids(problem.question), suffix_ids])
        answer = np.full(ANSWER_LENGTH, vocab[EOS])
        body = ids(problem.answer)
        answer[: len(body)] = body
        answer[len(body)] = vocab[EOT]
        rows.append(np.concatenate([prompt, answer]))
        prompt_lens.append(len(prompt))
    width = max(len(r) for r in rows)
    tokens = np.full((len(rows), width), vocab[EOS], dtype=np.int64)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = row
    return torch.from_numpy(tokens), torch.tensor(prompt_lens)


def train_forward(model: LLaDAModel, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The network's own blocks outside inference_mode, so gradients flow; padding keys
    (valid False) are masked. Same computation as LLaDAModel.forward without a cache."""
    B, T = tokens.shape
    positions = torch.arange(T, device=tokens.device).expand(B, T)
    sin, cos = rope_tables(positions, model.config.head_dim, model.config.rope_theta)
    x = model.transformer["wte"](tokens)
    key_mask = valid[:, None, None, :]
    for layer, block in enumerate(model.transformer["blocks"]):
        x = block(x, sin, cos, layer, key_mask)
    return model.head(model.transformer["ln_f"](x))


def llada_loss(model: LLaDAModel, tokens: torch.Tensor, prompt_lens: torch.Tensor,
               generator: torch.Generator, forward=train_forward) -> torch.Tensor:
    B, T = tokens.shape
    index = torch.arange(T, device=tokens.device)[None, :]
    in_answer = (index >= prompt_lens[:, None]) & (index < prompt_lens[:, None] + ANSWER_LENGTH)
    eps = 1e-3  # keeps 1/t finite
    t = (1 - eps) * torch.rand(B, 1, device=tokens.device, generator=generator) + eps
    masked = in_answer & (torch.rand(B, T, device=tokens.device, generator=generator) < t)
    noisy = torch.where(masked, model.config.mask_token_id, tokens)
    logits = forward(model, noisy, index < prompt_lens[:, None] + ANSWER_LENGTH)
    # every position's loss, kept where masked: static shapes (no boolean indexing) compile well
    ce = F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten(), reduction="none").view(B, T)
    return (ce * masked / t).sum() / (B * ANSWER_LENGTH)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def train(cfg: TrainConfig, out: Path, device: str) -> LLaDAModel:
    model = init_model(model_config(), cfg.seed).to(device)
    forward = train_forward
    if cfg.compile and device.startswith("cuda"):
        forward = torch.compile(train_forward)  # fuses the norms, RoPE and SwiGLU
    if cfg.steps:
        started = time.time()
        tokens, prompt_lens = encode(data.problems(cfg.num_examples, cfg.seed, "train"))
        tokens, prompt_lens = tokens.to(device), prompt_lens.to(device)
        print(f"data: {tokens.shape[0]} examples of width {tokens.shape[1]} in {time.time() - started:.0f}s", flush=True)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98),
                                      weight_decay=cfg.weight_decay, fused=device.startswith("cuda"))
        generator = torch.Generator(device=device).manual_seed(cfg.seed)
        started = time.time()
        for step in range(cfg.steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg, step)
            batch = torch.randint(0, tokens.shape[0], (cfg.batch_size,), device=device, generator=generator)
            with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
                try:
                    loss = llada_loss(model, tokens[batch], prompt_lens[batch], generator, forward)
                except Exception as exc:  # a compiler failure costs speed, not the run
                    if step or forward is train_forward:
                        raise
                    print(f"torch.compile failed ({type(exc).__name__}: {exc}); training eagerly", flush=True)
                    forward = train_forward
                    loss = llada_loss(model, tokens[batch], prompt_lens[batch], generator, forward)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                print(f"step {step} loss {loss.item():.4f} lr {learning_rate(cfg, step):.2e} "
                      f"{time.time() - started:.0f}s", flush=True)
            if step == 20:
                torch.cuda.synchronize() if device.startswith("cuda") else None
                warm = time.time()  # compilation and warm-up are behind us
            if step == 70 and cfg.max_minutes is not None:
                # fit the run into the time given, with the learning-rate schedule intact;
                # rerunning with --steps set to the printed number reproduces it
                per_step = (time.time() - warm) / 50
                fitting = step + 1 + int((60 * cfg.max_minutes - (time.time() - started)) / per_step)
                if fitting < cfg.steps:
                    cfg.steps = max(fitting, step + 2)
                    print(f"--max-minutes {cfg.max_minutes}: training for --steps {cfg.steps} "
                          f"({1000 * per_step:.0f} ms a step)", flush=True)
            if step + 1 >= cfg.steps:
                break
    model.eval()
    save_checkpoint(model, out, dtype=torch.bfloat16)
    save_tokenizer(out)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    for name, value in asdict(TrainConfig()).items():
        kind = float if name in ("lr", "min_lr", "weight_decay", "grad_clip", "max_minutes") else int
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=value)
    args = parser.parse_args(argv)
    cfg = TrainConfig(**{name: getattr(args, name) for name in asdict(TrainConfig())})
    print(cfg, flush=True)
    train(cfg, args.out, args.device)
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
