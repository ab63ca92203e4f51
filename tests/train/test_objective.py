"""Training pieces: the gradient-carrying forward computes what the served forward computes
(both families), the random init is reproducible, LLaDA's loss falls on a small batch, and
Dream's loss predicts each masked token from the output one position earlier."""

from __future__ import annotations

import pytest
import torch

from fastdllm_ray.model import load_tokenizer
from fastdllm_ray.train import data
from fastdllm_ray.train.batches import LengthBatches, encode
from fastdllm_ray.train.chats import Chat
from fastdllm_ray.train.objectives import dream_loss, llada_loss, train_forward
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
    with torch.no_grad():
        trained = train_forward(model, tokens, valid)
    torch.testing.assert_close(trained, model(tokens), rtol=1e-5, atol=1e-5)


def test_random_init_is_reproducible_per_seed(recipe):
    recipe, tokenizer = recipe
    a, b, c = (init_weights(recipe.build_model(tokenizer), seed=s).state_dict() for s in (0, 0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_loss_falls_when_fitting_a_small_batch(recipe):
    recipe, tokenizer = recipe
    model = init_weights(recipe.build_model(tokenizer), seed=0)
    loss_fn = {"llada": llada_loss, "dream": dream_loss}[recipe.objective]
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
