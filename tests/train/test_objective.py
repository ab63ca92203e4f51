"""Training pieces: the gradient-carrying forward computes what the served forward computes,
the random init is reproducible, and the LLaDA loss falls on a small batch."""

from __future__ import annotations

import torch

from fastdllm_ray.train import data
from fastdllm_ray.train.train import encode, init_model, llada_loss, model_config, train_forward


def test_train_forward_matches_inference_forward():
    model = init_model(model_config(), seed=0).eval()
    tokens, _ = encode(data.problems(3, 0, "train"))
    valid = torch.ones_like(tokens, dtype=torch.bool)
    with torch.no_grad():
        trained = train_forward(model, tokens, valid)
    torch.testing.assert_close(trained, model(tokens), rtol=1e-5, atol=1e-5)


def test_random_init_is_reproducible_per_seed():
    a, b, c = (init_model(model_config(), seed=s).state_dict() for s in (0, 0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["transformer.wte.weight"], c["transformer.wte.weight"])


def test_loss_falls_when_fitting_a_small_batch():
    model = init_model(model_config(), seed=0)
    tokens, prompt_lens = encode(data.problems(4, 0, "train"))

    def held_loss() -> float:  # the same masks every time, averaged over several draws of t
        generator = torch.Generator().manual_seed(123)
        with torch.no_grad():
            return sum(llada_loss(model, tokens, prompt_lens, generator).item() for _ in range(8)) / 8

    before = held_loss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(15):
        loss = llada_loss(model, tokens, prompt_lens, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert held_loss() < 0.6 * before
