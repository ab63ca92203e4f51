"""Training pieces: the gradient-carrying forward computes what the served forward computes
(every recipe), the random init is reproducible, each loss falls on a small batch, Dream's
loss predicts each masked token from the output one position earlier, and Fast-dLLM v2's runs
the noisy and clean copies side by side with block-diffusion attention (the clean half is the
served block-causal forward; a noisy block sees only itself and the clean blocks before it)."""

from __future__ import annotations

import pytest
import torch

from fastdllm_ray.model import load_tokenizer
from fastdllm_ray.train import data
from fastdllm_ray.train.batches import LengthBatches, encode
from fastdllm_ray.train.chats import Chat
from fastdllm_ray.train.objectives import (OBJECTIVES, block_diffusion_attention, dream_loss, fast_dllm_v2_loss,
                                           llada_loss, train_forward)
from fastdllm_ray.train.recipes import ANSWER_LENGTH, RECIPES, init_weights


@pytest.fixture(scope="module", params=sorted(RECIPES))
def recipe(request, tmp_path_factory):
    """(recipe, its saved tokenizer)."""
    recipe = RECIPES[request.param]
    directory = tmp_path_factory.mktemp(request.param)
    recipe.save_tokenizer(directory)
    return recipe, load_tokenizer(directory)


def batch(recipe, tokenizer, count: int = 4):
    chats = [Chat((p,)) for p in data.problems(count, 0, "train")]
    rows, prompt_lens = encode(tokenizer, chats, ANSWER_LENGTH, recipe.end_token, recipe.pad_token)
    pad = tokenizer.convert_tokens_to_ids(recipe.pad_token)
    return LengthBatches(rows, prompt_lens, pad, count, seed=0).next()


def test_train_forward_matches_inference_forward(recipe):
    recipe, tokenizer = recipe
    model = init_weights(recipe.build_model(tokenizer), seed=0).eval()
    tokens, _ = batch(recipe, tokenizer, 3)
    valid = torch.ones_like(tokens, dtype=torch.bool)
    T = tokens.shape[1]
    block = getattr(model.config, "bd_size", None)  # block-causal families: the served forward is too
    attend = None if block is None else block_diffusion_attention(T, block, tokens.device)[T:, T:]
    with torch.no_grad():
        trained = train_forward(model, tokens, valid, attend=attend)
    torch.testing.assert_close(trained, model(tokens), rtol=1e-5, atol=1e-5)


def test_random_init_is_reproducible_per_seed(recipe):
    recipe, tokenizer = recipe
    a, b, c = (init_weights(recipe.build_model(tokenizer), seed=s).state_dict() for s in (0, 0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_loss_falls_when_fitting_a_small_batch(recipe):
    recipe, tokenizer = recipe
    model = init_weights(recipe.build_model(tokenizer), seed=0)
    loss_fn = OBJECTIVES[recipe.objective]
    tokens, prompt_lens = batch(recipe, tokenizer)

    def held_loss() -> float:  # the same masks every time, averaged over several draws of t
        generator = torch.Generator().manual_seed(123)
        with torch.no_grad():
            return sum(loss_fn(model, tokens, prompt_lens, ANSWER_LENGTH, generator).item() for _ in range(8)) / 8

    before = held_loss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(15):
        loss = loss_fn(model, tokens, prompt_lens, ANSWER_LENGTH, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert held_loss() < 0.6 * before


class _Echo(torch.nn.Module):
    """A stand-in network whose output at position i is certain of token i + offset's value:
    it tells which output the loss reads for which token."""

    def __init__(self, tokens: torch.Tensor, vocab: int, offset: int) -> None:
        super().__init__()
        self.tokens, self.vocab, self.offset = tokens, vocab, offset
        self.config = type("Config", (), {"mask_token_id": vocab - 1})()

    def __call__(self, model, noisy, valid):
        target = torch.roll(self.tokens, -self.offset, dims=1)
        return 50.0 * torch.nn.functional.one_hot(target, self.vocab).float()


def test_dream_reads_each_masked_token_from_the_previous_output_and_llada_from_its_own():
    tokens = torch.randint(0, 10, (4, 20))
    prompt_lens = torch.full((4,), 6)
    for loss_fn, right, wrong in ((dream_loss, 1, 0), (llada_loss, 0, 1)):
        losses = {}
        for offset in (right, wrong):
            echo = _Echo(tokens, 12, offset)
            losses[offset] = loss_fn(echo, tokens, prompt_lens, 10, torch.Generator().manual_seed(0), forward=echo).item()
        assert losses[right] < 1e-6 < losses[wrong], loss_fn.__name__


def test_block_diffusion_attention_noisy_blocks_see_themselves_and_the_clean_past():
    attend = block_diffusion_attention(6, 2, "cpu").int()  # 3 blocks of 2; rows: 6 noisy then 6 clean queries
    noisy_block_1, clean_block_1 = attend[2], attend[8]
    assert noisy_block_1.tolist() == [0, 0, 1, 1, 0, 0] + [1, 1, 0, 0, 0, 0]
    assert clean_block_1.tolist() == [0] * 6 + [1, 1, 1, 1, 0, 0]


def test_v2_clean_half_is_the_served_forward_and_noise_stays_in_its_block(tmp_path):
    recipe = RECIPES["tiny-v2-arith"]
    recipe.save_tokenizer(tmp_path)
    tokenizer = load_tokenizer(tmp_path)
    model = init_weights(recipe.build_model(tokenizer), seed=0).eval()
    tokens, prompt_lens = batch(recipe, tokenizer, 1)  # one row: no padding keys
    T, block = tokens.shape[1], model.config.bd_size
    seen = []

    def forward(m, both, valid, positions, attend):
        out = train_forward(m, both, valid, positions, attend)
        seen.append((both, out))
        return out

    with torch.no_grad():
        fast_dllm_v2_loss(model, tokens, prompt_lens, ANSWER_LENGTH, torch.Generator().manual_seed(0), forward)
        both, out = seen[0]
        torch.testing.assert_close(out[:, T:], model(tokens), rtol=1e-5, atol=1e-5)
        changed = both.clone()
        changed[:, block] = (changed[:, block] + 1) % model.config.vocab_size  # the noisy copy's block 1 only
        again = train_forward(model, changed, torch.ones_like(changed, dtype=torch.bool),
                              torch.cat([torch.arange(T)] * 2), block_diffusion_attention(T, block, "cpu"))
    moved = (again - out).abs().amax(dim=(0, 2)) > 1e-6
    assert moved[block:2 * block].all() and not moved[:block].any() and not moved[2 * block:].any()


def test_v2_opens_a_block_from_the_clean_output_before_it():
    """Masked tokens are read from the noisy output at i - 1, except at a block's first
    position, read from the clean output at i - 1 (what decoding carries into a block)."""
    B, T, block, vocab = 3, 12, 4, 12
    tokens = torch.randint(0, 10, (B, T))
    model = type("M", (), {"config": type("C", (), {"mask_token_id": vocab - 1, "bd_size": block})()})()

    def forward(_m, both, valid, positions, attend, wrong_half):
        out = 50.0 * torch.nn.functional.one_hot(torch.roll(tokens, -1, dims=1), vocab).float()
        out = torch.cat([out, out], dim=1)
        starts = torch.arange(1, T) % block == 0  # outputs at i - 1 whose i opens a block
        index = torch.arange(T - 1)[starts]
        out[:, (T if wrong_half == "clean" else 0) + index] = 0.0  # the half that must not be read there
        return out

    losses = {half: fast_dllm_v2_loss(model, tokens, torch.full((B,), 2), 10, torch.Generator().manual_seed(0),
                                      lambda *a, half=half: forward(*a, wrong_half=half)).item()
              for half in ("clean", "noisy")}
    assert losses["noisy"] < 1e-6 < losses["clean"]
