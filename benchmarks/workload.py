"""Serving traffic to replay: requests that arrive while others run, with mixed prompt lengths,
answer lengths, block lengths and step counts (what a server sees), and the static batch with
the same mean lengths to compare it with. Shared by the engine (benchmarks/traffic.py) and the
HTTP (benchmarks/traffic_http.py) benchmarks, so both replay the same requests."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastdllm_ray import GenerationParams

PROMPT_RANGE = (32, 512)  # uniform
ANSWER_LENGTHS = (64, 128, 192, 256, 320, 384, 448, 512)  # uniform: mean 288
BLOCK_LENGTHS = (16, 32, 64)


@dataclass(frozen=True)
class Request:
    prompt: list[int]
    params: GenerationParams
    arrival: float  # engine steps (engine replay) or seconds (HTTP replay) after the start


def tokens_per_step_params(gen: int, block: int, tokens_per_step: int, family: str = "canvas") -> GenerationParams:
    """`tokens_per_step` tokens committed a step: LLaDA/Dream's fixed schedule with the dual cache
    (steps = gen / tokens_per_step), or (family "block": Fast-dLLM v2) sub-blocks of that many
    positions with a threshold every position passes, so each forward finishes its sub-block, or
    (family "quota": LLaDA2.0) a quota of that many a step and a threshold none passes."""
    if family == "quota":
        return GenerationParams(gen_length=gen, block_length=block, steps_per_block=block // tokens_per_step,
                                threshold=1.0, stop_at_eos=False)
    if family == "block":
        return GenerationParams(gen_length=gen, block_length=block, sub_block_length=tokens_per_step,
                                threshold=1e-30, stop_at_eos=False)
    return GenerationParams(gen_length=gen, block_length=block, steps=gen // tokens_per_step, cache="dual",
                            stop_at_eos=False)


def traffic(n: int, interval: float, tokens_per_step: tuple[int, ...], seed: int = 0,
            vocab: int = 120000, family: str = "canvas") -> list[Request]:
    """n requests, one every `interval`; prompt, answer and block lengths drawn uniformly, and
    tokens per step taken in turn from `tokens_per_step`."""
    gen = torch.Generator().manual_seed(seed)

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=gen))]

    requests = []
    for i in range(n):
        prompt_len = int(torch.randint(PROMPT_RANGE[0], PROMPT_RANGE[1] + 1, (1,), generator=gen))
        params = tokens_per_step_params(pick(ANSWER_LENGTHS), pick(BLOCK_LENGTHS), tokens_per_step[i % len(tokens_per_step)],
                                        family)
        requests.append(Request(torch.randint(0, vocab, (prompt_len,), generator=gen).tolist(), params, i * interval))
    return requests


def static_batch(n: int, tokens_per_step: tuple[int, ...], seed: int = 1, vocab: int = 120000,
                 family: str = "canvas") -> list[Request]:
    """n requests at once, every one with the traffic's mean prompt (272) and answer (288)
    lengths, the traffic's block lengths and tokens per step in turn (the same work per token:
    a shorter block refreshes its cache more often, a longer one computes more per step)."""
    gen = torch.Generator().manual_seed(seed)
    prompt_len = sum(PROMPT_RANGE) // 2
    answer = sum(ANSWER_LENGTHS) // len(ANSWER_LENGTHS)
    return [Request(torch.randint(0, vocab, (prompt_len,), generator=gen).tolist(),
                    tokens_per_step_params(answer, BLOCK_LENGTHS[i % len(BLOCK_LENGTHS)],
                                           tokens_per_step[i % len(tokens_per_step)], family), 0.0)
            for i in range(n)]


def mixed_prompts(n: int, gen_length: int = 256, seed: int = 2, vocab: int = 120000,
                  family: str = "canvas") -> tuple[list[Request], list[Request]]:
    """A batch of prompts of 64-512 tokens and one of equal prompts with the same total, both
    one token per step: attention cost should follow each row's own length."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.linspace(64, 512, n).round().long().tolist()
    equal = sum(lengths) // n
    params = tokens_per_step_params(gen_length, 32, 1, family)
    mixed = [Request(torch.randint(0, vocab, (n_,), generator=gen).tolist(), params, 0.0) for n_ in lengths]
    same = [Request(torch.randint(0, vocab, (equal,), generator=gen).tolist(), params, 0.0) for _ in lengths]
    return mixed, same
