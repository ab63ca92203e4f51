"""The training objectives of the model families, over one shared gradient-carrying forward.

All are the masked-diffusion SFT loss: a ratio t ~ U(0, 1) per example, that fraction of
the answer tokens masked (the prompt never), the cross-entropy on the masked tokens weighted
by 1/t. They differ in which output predicts a masked token, and what it sees:

- llada: position i's own output (LLaDA's network is a plain bidirectional denoiser);
- dream: the output at i - 1 (Dream keeps the shift of the autoregressive model it was
  adapted from, and its decoding reads the logits shifted by one: decoding/dream.py);
- fast_dllm_v2: block diffusion, as the v2 model's training forward runs it: the noisy copy
  and the clean copy side by side, at the same positions. A noisy block sees itself (no mask
  inside a block) and the clean blocks before it; a clean block sees the clean blocks up to
  its own (block-causal, as the K/V cache holds them at decoding). Position i is predicted by
  the noisy output at i - 1, or, at a block's first position, by the clean output at i - 1
  (decoding carries a block's first id from the block-store forward of the block before:
  decoding/fast_dllm_v2.py).

A family plugs in by adding a function of the same signature to OBJECTIVES.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from fastdllm_ray.model import DiffusionTransformer
from fastdllm_ray.model.transformer import rope_tables

Objective = Callable[..., torch.Tensor]


def train_forward(model: DiffusionTransformer, tokens: torch.Tensor, valid: torch.Tensor,
                  positions: torch.Tensor | None = None, attend: torch.Tensor | None = None) -> torch.Tensor:
    """The network's own blocks outside inference_mode, so gradients flow; padding keys
    (valid False) are masked. Same computation as the model's forward without a cache; or,
    given `positions` [T] and `attend` [T, T] (query x key), that attention pattern."""
    B, T = tokens.shape
    positions = torch.arange(T, device=tokens.device) if positions is None else positions
    sin, cos = rope_tables(positions.expand(B, T), model.config.head_dim, model.config.rope_theta)
    x = model.embedding(tokens)
    key_mask = valid[:, None, None, :]
    if attend is not None:
        key_mask = key_mask & attend[None, None]
    for layer, block in enumerate(model.blocks):
        x = block(x, sin, cos, layer, key_mask)
    return model.logits(x)


def _noise(model: DiffusionTransformer, tokens: torch.Tensor, prompt_lens: torch.Tensor, answer_length: int,
           generator: torch.Generator, whole: torch.Tensor | None = None):
    """(noisy tokens, masked [B, T], weight [B, 1], valid [B, T]).

    The noised region of an example is its answer (SFT), or, where `whole` [B] is set, the
    whole conversation (pretraining: the prompt's tokens are targets too). A fraction t of
    it is masked: exactly k = t x its length tokens (k >= 1), at random, t spread evenly
    over the batch (one draw in each of B equal slices of (0, 1), shuffled). In expectation
    that is masking each token with probability t, without the variance of a random count
    (an example with t = 0.01 that happened to mask 3 tokens instead of 0.6 would weigh 300
    tokens' worth). weight = 1 / (t x region length): the 1/t of the loss, per token."""
    B, T = tokens.shape
    device = tokens.device
    index = torch.arange(T, device=device)[None, :]
    end = prompt_lens[:, None] + answer_length
    start = prompt_lens[:, None] if whole is None else torch.where(whole[:, None], 0, prompt_lens[:, None])
    region = (index >= start) & (index < end)
    length = (end - start).float()
    slices = torch.randperm(B, device=device, generator=generator)[:, None]
    u = (slices + torch.rand(B, 1, device=device, generator=generator)) / B
    k = (u * length).round().clamp(min=1)
    # the k region positions with the smallest random scores (positions outside score 2)
    scores = torch.where(region, torch.rand(B, T, device=device, generator=generator), 2.0)
    masked = scores.argsort(dim=1).argsort(dim=1) < k
    noisy = torch.where(masked, model.config.mask_token_id, tokens)
    return noisy, masked, 1.0 / k, index < end


def llada_loss(model: DiffusionTransformer, tokens: torch.Tensor, prompt_lens: torch.Tensor, answer_length: int,
               generator: torch.Generator, forward=train_forward, whole: torch.Tensor | None = None) -> torch.Tensor:
    B, T = tokens.shape
    noisy, masked, weight, valid = _noise(model, tokens, prompt_lens, answer_length, generator, whole)
    logits = forward(model, noisy, valid)
    # every position's loss, kept where masked: static shapes (no boolean indexing) compile well
    ce = F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten(), reduction="none").view(B, T)
    return (ce * masked * weight).sum() / B


def dream_loss(model: DiffusionTransformer, tokens: torch.Tensor, prompt_lens: torch.Tensor, answer_length: int,
               generator: torch.Generator, forward=train_forward, whole: torch.Tensor | None = None) -> torch.Tensor:
    """Position i (masked) is predicted by the output at i - 1, which may itself be masked:
    as Dream's decoding reads it (the first answer token from the prompt's last position)."""
    B, T = tokens.shape
    noisy, masked, weight, valid = _noise(model, tokens, prompt_lens, answer_length, generator, whole)
    if whole is not None:  # the first token has no output before it
        masked[:, 0] = False
    logits = forward(model, noisy, valid)[:, :-1]
    ce = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten(), reduction="none").view(B, T - 1)
    return (ce * masked[:, 1:] * weight).sum() / B


def block_diffusion_attention(T: int, block: int, device) -> torch.Tensor:
    """[2T, 2T] query x key over (noisy copy, clean copy) of T positions in blocks of `block`."""
    blocks = torch.arange(T, device=device) // block
    same = blocks[:, None] == blocks[None, :]
    before = blocks[:, None] > blocks[None, :]
    noisy_rows = torch.cat([same, before], dim=1)
    clean_rows = torch.cat([torch.zeros_like(same), same | before], dim=1)
    return torch.cat([noisy_rows, clean_rows], dim=0)


def fast_dllm_v2_loss(model: DiffusionTransformer, tokens: torch.Tensor, prompt_lens: torch.Tensor,
                      answer_length: int, generator: torch.Generator, forward=train_forward,
                      whole: torch.Tensor | None = None) -> torch.Tensor:
    B, T = tokens.shape
    block = model.config.bd_size
    noisy, masked, weight, valid = _noise(model, tokens, prompt_lens, answer_length, generator, whole)
    if whole is not None:
        masked[:, 0] = False
    index = torch.arange(T, device=tokens.device)
    logits = forward(model, torch.cat([noisy, tokens], dim=1), torch.cat([valid, valid], dim=1),
                     torch.cat([index, index]), block_diffusion_attention(T, block, tokens.device))
    noisy_out, clean_out = logits[:, :T - 1], logits[:, T:2 * T - 1]  # outputs at i - 1 for i = 1..T-1
    opens_block = (index[1:] % block == 0)[None, :, None]
    predicted = torch.where(opens_block, clean_out, noisy_out)
    ce = F.cross_entropy(predicted.float().flatten(0, 1), tokens[:, 1:].flatten(), reduction="none").view(B, T - 1)
    return (ce * masked[:, 1:] * weight).sum() / B


OBJECTIVES: dict[str, Objective] = {"llada": llada_loss, "dream": dream_loss, "fast_dllm_v2": fast_dllm_v2_loss}
