"""The plain forward of our LLaDA network reproduces the reference modeling code's logits,
and padding or a cache does not change what a sequence computes."""

from __future__ import annotations

import torch

from fastdllm_ray.model import PagedForward, PagedKVCache
from fastdllm_ray.model.paged_attention import PagedBatch


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


def paged_forward(cache: PagedKVCache, spans: list[tuple[int, int]], lengths: list[int], pages: list[list[int]]):
    """positions [N] and the PagedForward of rows that compute positions [start, end) of sequences
    of `lengths`, whose K/V live in `pages` (one list per row)."""
    positions = torch.cat([torch.arange(a, b) for a, b in spans])
    table = torch.zeros(len(spans), max(len(p) for p in pages), dtype=torch.int32)
    for r, row_pages in enumerate(pages):
        table[r, : len(row_pages)] = torch.tensor(row_pages)
    rows = torch.cat([table[r, torch.arange(a, b) // cache.page_size].long() * cache.page_size
                      + torch.arange(a, b) % cache.page_size for r, (a, b) in enumerate(spans)])
    cu = [0]
    for a, b in spans:
        cu.append(cu[-1] + b - a)
    batch = PagedBatch(torch.tensor(cu), torch.tensor(lengths), table, cache.page_size, host=(cu, lengths))
    return positions, PagedForward(cache, rows, batch)


def test_cached_forward_of_a_slice_matches_the_full_forward(ref_model, reference):
    # Fill the cache with a full forward, then recompute positions 8..16 against it: with
    # unchanged tokens the keys are the same numbers, so the logits must be too.
    cfg = ref_model.config
    ids = torch.tensor(reference["logits_check"]["input_ids"][0])
    cache = PagedKVCache(cfg.n_layers, 8, 16, cfg.n_kv_heads, cfg.head_dim, torch.float32, "cpu")
    pages = [[5, 2]]  # not in order: the page table decides
    positions, paged = paged_forward(cache, [(0, 24)], [24], pages)
    full = ref_model.logits(ref_model.hidden_states(ids, positions, paged))
    positions, paged = paged_forward(cache, [(8, 16)], [24], pages)
    part = ref_model.logits(ref_model.hidden_states(ids[8:16], positions, paged))
    assert torch.allclose(full, ref_model(ids[None])[0], atol=1e-5, rtol=0)
    assert torch.allclose(part, full[8:16], atol=1e-5, rtol=0)


def test_grouped_query_attention_packed_rows_match_their_full_forwards():
    # the refdata model has as many K/V heads as query heads; LLaDA configs may have fewer.
    # Two sequences of different lengths packed into one forward each read only their pages.
    from fastdllm_ray.model import LLaDAConfig, LLaDAModel

    torch.manual_seed(0)
    cfg = LLaDAConfig(d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=48, vocab_size=64,
                      embedding_size=64, max_sequence_length=64, mask_token_id=63)
    model = LLaDAModel(cfg).eval()
    a, b = torch.randint(0, 63, (20,)), torch.randint(0, 63, (13,))
    cache = PagedKVCache(cfg.n_layers, 6, 16, cfg.n_kv_heads, cfg.head_dim, torch.float32, "cpu")
    pages = [[4, 0], [2]]
    positions, paged = paged_forward(cache, [(0, 20), (0, 13)], [20, 13], pages)
    full = model.logits(model.hidden_states(torch.cat([a, b]), positions, paged))
    assert torch.allclose(full[:20], model(a[None])[0], atol=1e-5, rtol=0)
    assert torch.allclose(full[20:], model(b[None])[0], atol=1e-5, rtol=0)
    # a dual-style step: each row recomputes a slice against its cached sequence
    positions, paged = paged_forward(cache, [(4, 12), (8, 13)], [20, 13], pages)
    part = model.logits(model.hidden_states(torch.cat([a[4:12], b[8:13]]), positions, paged))
    assert torch.allclose(part[:8], full[4:12], atol=1e-5, rtol=0)
    assert torch.allclose(part[8:], full[28:33], atol=1e-5, rtol=0)
