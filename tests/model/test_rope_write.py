"""The fused RoPE + cache-write kernel (CUDA, Triton) computes what the unfused path does."""

import pytest
import torch

from fastdllm_ray.model import PagedForward, PagedKVCache
from fastdllm_ray.model.paged_attention import PagedBatch
from fastdllm_ray.model import rope_write
from fastdllm_ray.model.llada import apply_rope, rope_tables

DEVICE = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
pytestmark = pytest.mark.skipif(not rope_write.available(DEVICE), reason="needs Triton on CUDA (the device tool)")


@pytest.mark.parametrize("n_heads,n_kv_heads,head_dim,batch,width", [(32, 32, 128, 3, 32), (6, 2, 32, 2, 5)])
def test_fused_matches_unfused(n_heads, n_kv_heads, head_dim, batch, width):
    gen = torch.Generator(device=DEVICE).manual_seed(n_heads + width)
    qkv = torch.randn(batch, width, (n_heads + 2 * n_kv_heads) * head_dim, generator=gen, device=DEVICE)
    qkv = qkv.to(torch.bfloat16)
    # distinct positions per row: two tokens writing one cache row would race
    positions = torch.stack([torch.randperm(40, generator=gen, device=DEVICE)[:width] for _ in range(batch)])
    positions[0, -1] = -1  # padding
    sin, cos = rope_tables(positions, head_dim, 500000.0)
    caches = [PagedKVCache(1, 3 * (batch + 1), 16, n_kv_heads, head_dim, torch.bfloat16, DEVICE) for _ in range(2)]
    for cache in caches:  # poison: every row written must be overwritten
        cache.k.normal_(generator=gen), cache.v.copy_(cache.k)
    caches[1].k.copy_(caches[0].k), caches[1].v.copy_(caches[0].v)
    # row r's 48 positions in pages 3 (batch - r) .. + 2; padding goes to the scratch page
    rows = (3 * 16 * (batch - torch.arange(batch, device=DEVICE)))[:, None] + positions
    rows = rows.masked_fill(positions < 0, caches[0].scratch_row).reshape(-1)
    views = [PagedForward(cache, rows, PagedBatch(*[torch.zeros(1)] * 3, 16)) for cache in caches]

    q_ref, k, v = qkv.split([n_heads * head_dim, n_kv_heads * head_dim, n_kv_heads * head_dim], dim=-1)
    q_ref = apply_rope(q_ref.reshape(batch, width, n_heads, head_dim), sin, cos)
    k = apply_rope(k.reshape(batch, width, n_kv_heads, head_dim), sin, cos)
    views[0].write(0, k, v.reshape(batch, width, n_kv_heads, head_dim))

    q = rope_write.rope_and_write(qkv, sin, cos, *caches[1].rows(0), rows, n_heads, n_kv_heads)
    # float32 math, bf16 results: at most one rounding step apart where an FMA contracts differently
    torch.testing.assert_close(q, q_ref, atol=0, rtol=2 ** -7)
    torch.testing.assert_close(caches[1].k, caches[0].k, atol=0, rtol=2 ** -7)
    assert torch.equal(caches[1].v, caches[0].v)
    written = caches[0].k.reshape(-1, n_kv_heads * head_dim)[rows]
    fused = caches[1].k.reshape(-1, n_kv_heads * head_dim)[rows]
    assert (written != fused).float().mean() < 0.01
