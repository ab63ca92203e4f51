"""The plain forward of our LLaDA network reproduces the reference modeling code's logits,
and padding or a cache does not change what a sequence computes."""

from __future__ import annotations

import torch

from fastdllm_ray.model import CacheView, KVCache


def test_plain_forward_matches_reference_logits(ref_model, reference):
    check = reference["logits_check"]
    logits = ref_model(torch.tensor(check["input_ids"]))
    expected = torch.tensor(check["logits"])
    assert logits.shape == expected.shape
    assert torch.allclose(logits, expected, atol=1e-4, rtol=0)


def test_padded_row_computes_the_same_logits_as_alone(ref_model, reference):
    ids = torch.tensor(reference["logits_check"]["input_ids"])
    short = ids[1, :10]
    alone = ref_model(short[None])
    tokens = torch.stack([ids[0], torch.cat([short, torch.zeros(14, dtype=torch.long)])])
    positions = torch.arange(24).expand(2, 24).clone()
    positions[1, 10:] = -1
    batched = ref_model(tokens, positions)
    assert torch.allclose(batched[1, :10], alone[0], atol=1e-5, rtol=0)
    assert torch.allclose(batched[0], ref_model(ids[:1])[0], atol=1e-5, rtol=0)


def test_cached_forward_of_a_slice_matches_the_full_forward(ref_model, reference):
    # Fill the cache with a full forward, then recompute positions 8..16 against it: with
    # unchanged tokens the keys are the same numbers, so the logits must be too.
    cfg = ref_model.config
    ids = torch.tensor(reference["logits_check"]["input_ids"][:1])
    cache = KVCache(cfg.n_layers, 1, 24, cfg.n_kv_heads, cfg.head_dim, torch.float32, "cpu")
    slots = torch.tensor([0])
    full_pos = torch.arange(24)[None]
    full = ref_model(ids, full_pos, view=CacheView(cache, slots, full_pos, 24, None))
    part_pos = torch.arange(8, 16)[None]
    part = ref_model(ids[:, 8:16], part_pos, view=CacheView(cache, slots, part_pos, 24, None))
    assert torch.allclose(full, ref_model(ids), atol=1e-5, rtol=0)
    assert torch.allclose(part[0], full[0, 8:16], atol=1e-5, rtol=0)


def test_grouped_query_attention_cached_slice_matches_full_forward():
    # the refdata model has as many K/V heads as query heads; LLaDA configs may have fewer
    from fastdllm_ray.model import LLaDAConfig, LLaDAModel

    torch.manual_seed(0)
    cfg = LLaDAConfig(d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=48, vocab_size=64,
                      embedding_size=64, max_sequence_length=64, mask_token_id=63)
    model = LLaDAModel(cfg).eval()
    ids = torch.randint(0, 63, (2, 20))
    cache = KVCache(cfg.n_layers, 3, 20, cfg.n_kv_heads, cfg.head_dim, torch.float32, "cpu")
    slots = torch.tensor([2, 0])  # not contiguous: the gathered read path
    full_pos = torch.arange(20).expand(2, 20)
    full = model(ids, full_pos, view=CacheView(cache, slots, full_pos, 20, None))
    part_pos = torch.arange(4, 12).expand(2, 8)
    part = model(ids[:, 4:12], part_pos, view=CacheView(cache, slots, part_pos, 20, None))
    assert torch.allclose(full, model(ids), atol=1e-5, rtol=0)
    assert torch.allclose(part, full[:, 4:12], atol=1e-5, rtol=0)
