"""The training objectives of the model families, over one shared gradient-carrying forward.

Both are the masked-diffusion SFT loss: a ratio t ~ U(eps, 1) per example, every answer
token masked with probability t (the prompt never), the cross-entropy on the masked tokens
weighted by 1/t. They differ in which output predicts a masked token:

- llada: position i's own output (LLaDA's network is a plain bidirectional denoiser);
- dream: the output at i - 1 (Dream keeps the shift of the autoregressive model it was
  adapted from, and its decoding reads the logits shifted by one: decoding/dream.py).

A family plugs in by adding a function of the same signature to OBJECTIVES (a block-diffusion
model, Fast-dLLM v2's, would mask one block of the answer and attend block-causally).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from fastdllm_ray.model import DiffusionTransformer
from fastdllm_ray.model.transformer import rope_tables

EPS = 1e-3  # keeps 1/t finite

Objective = Callable[..., torch.Tensor]


def train_forward(model: DiffusionTransformer, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The network's own blocks outside inference_mode, so gradients flow; padding keys
    (valid False) are masked. Same computation as the model's forward without a cache."""
    B, T = tokens.shape
    positions = torch.arange(T, device=tokens.device).expand(B, T)
    sin, cos = rope_tables(positions, model.config.head_dim, model.config.rope_theta)
    x = model.embedding(tokens)
    key_mask = valid[:, None, None, :]
    for layer, block in enumerate(model.blocks):
        x = block(x, sin, cos, layer, key_mask)
    return model.logits(x)


def _noise(model: DiffusionTransformer, tokens: torch.Tensor, prompt_lens: torch.Tensor, answer_length: int,
           generator: torch.Generator):
    """(noisy tokens, masked [B, T], t [B, 1], valid [B, T]). t is stratified over the batch
    (one draw in each of B equal slices of (eps, 1), shuffled): the same distribution as
    independent draws, with less variance in a batch's 1/t weights."""
    B, T = tokens.shape
    index = torch.arange(T, device=tokens.device)[None, :]
    end = prompt_lens[:, None] + answer_length
    in_answer = (index >= prompt_lens[:, None]) & (index < end)
    slices = torch.randperm(B, device=tokens.device, generator=generator)[:, None]
    u = (slices + torch.rand(B, 1, device=tokens.device, generator=generator)) / B
    t = (1 - EPS) * u + EPS
    masked = in_answer & (torch.rand(B, T, device=tokens.device, generator=generator) < t)
    noisy = torch.where(masked, model.config.mask_token_id, tokens)
    return noisy, masked, t, index < end


def llada_loss(model: DiffusionTransformer, tokens: torch.Tensor, prompt_lens: torch.Tensor, answer_length: int,
               generator: torch.Generator, forward=train_forward) -> torch.Tensor:
    B, T = tokens.shape
    noisy, masked, t, valid = _noise(model, tokens, prompt_lens, answer_length, generator)
    logits = forward(model, noisy, valid)
    # every position's loss, kept where masked: static shapes (no boolean indexing) compile well
    ce = F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten(), reduction="none").view(B, T)
    return (ce * masked / t).sum() / (B * answer_length)


def dream_loss(model: DiffusionTransformer, tokens: torch.Tensor, prompt_lens: torch.Tensor, answer_length: int,
               generator: torch.Generator, forward=train_forward) -> torch.Tensor:
    """Position i (masked) is predicted by the output at i - 1, which may itself be masked:
    as Dream's decoding reads it (the first answer token from the prompt's last position)."""
    B, T = tokens.shape
    noisy, masked, t, valid = _noise(model, tokens, prompt_lens, answer_length, generator)
    logits = forward(model, noisy, valid)[:, :-1]
    ce = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten(), reduction="none").view(B, T - 1)
    return (ce * masked[:, 1:] / t).sum() / (B * answer_length)


OBJECTIVES: dict[str, Objective] = {"llada": llada_loss, "dream": dream_loss}
