"""Attention of ragged query rows over a paged K/V cache: each row reads only its own pages,
whatever their order in the pool, with partial last pages, grouped K/V heads, rows of one
query or of a whole sequence, and block-causal rows (a block-diffusion prefill). The CPU path is checked against attention written out
by hand; the CUDA kernel (device tool) against the CPU path, also inside a CUDA graph."""

from __future__ import annotations

import pytest
import torch

from fastdllm_ray.model import paged_attention as pa

CUDA = torch.cuda.is_available() and pa.triton is not None


def make_rows(q_lens, kv_lens, n_heads, n_kv, head_dim, page_size, dtype=torch.float32, seed=0, causal=None):
    """Rows whose queries are the last q_len of their kv_len positions; `causal` gives each row's
    causal block size (0: it sees all its keys)."""
    gen = torch.Generator().manual_seed(seed)
    pages = [-(-k // page_size) for k in kv_lens]
    order = torch.randperm(sum(pages) + 3, generator=gen)
    table = torch.zeros(len(kv_lens), max(pages), dtype=torch.int32)
    used = 0
    for r, n in enumerate(pages):
        table[r, :n] = order[used: used + n].int()
        used += n
    k_pool = torch.randn(len(order), page_size, n_kv, head_dim, generator=gen).to(dtype)
    v_pool = torch.randn(len(order), page_size, n_kv, head_dim, generator=gen).to(dtype)
    cu = [0]
    for n in q_lens:
        cu.append(cu[-1] + n)
    q = torch.randn(cu[-1], n_heads, head_dim, generator=gen).to(dtype)
    causal = list(causal or [0] * len(kv_lens))
    q_start = [k - n for k, n in zip(kv_lens, q_lens)]
    batch = pa.PagedBatch(torch.tensor(cu, dtype=torch.int32), torch.tensor(kv_lens, dtype=torch.int32), table,
                          page_size, host=(cu, list(kv_lens), q_start, causal),
                          q_start=torch.tensor(q_start, dtype=torch.int32), causal=torch.tensor(causal, dtype=torch.int32))
    return q, k_pool, v_pool, batch


def by_hand(q, k_pool, v_pool, batch):
    """Row by row in float64: the row's positions looked up page by page, softmax(q k^T) v, a
    block-causal row's query at p limited to the keys before the end of p's block."""
    cu, kv_lens, q_start, causal = batch.host
    group = q.shape[1] // k_pool.shape[2]
    out = torch.zeros(q.shape, dtype=torch.float64)
    for r, n in enumerate(kv_lens):
        pos = torch.arange(n)
        pages = batch.page_table[r][pos // batch.page_size].long()
        keys = k_pool[pages, pos % batch.page_size].double().repeat_interleave(group, dim=1)  # [n, H, D]
        values = v_pool[pages, pos % batch.page_size].double().repeat_interleave(group, dim=1)
        queries = q[cu[r]: cu[r + 1]].double()  # [m, H, D]
        scores = torch.einsum("mhd,nhd->hmn", queries, keys) / q.shape[-1] ** 0.5
        if causal[r]:
            for i in range(len(queries)):
                scores[:, i, ((q_start[r] + i) // causal[r] + 1) * causal[r]:] = float("-inf")
        weights = torch.softmax(scores, dim=-1)
        out[cu[r]: cu[r + 1]] = torch.einsum("hmn,nhd->mhd", weights, values)
    return out


CASES = [  # (query lengths, key lengths, heads, K/V heads, page size, causal block sizes)
    ([32], [384], 4, 4, 64, None),  # a dual step at batch 1
    ([8, 1, 40, 70], [50, 33, 40, 70], 4, 4, 16, None),  # ragged: partial last pages, a refresh row
    ([16, 16, 5], [200, 17, 64], 28, 4, 16, None),  # grouped K/V heads (Dream's 28 / 4)
    ([96, 32, 64], [96, 128, 64], 28, 4, 64, [32, 0, 16]),  # block-causal prefills beside a block step
    ([160, 48], [192, 64], 4, 2, 16, [32, 32]),  # block-causal rows that start mid-sequence, on a block
]


@pytest.mark.parametrize("q_lens,kv_lens,heads,kv_heads,page_size,causal", CASES)
def test_sdpa_path_matches_attention_by_hand(q_lens, kv_lens, heads, kv_heads, page_size, causal):
    q, k_pool, v_pool, batch = make_rows(q_lens, kv_lens, heads, kv_heads, 32, page_size, causal=causal)
    out = pa.paged_attention_sdpa(q, k_pool, v_pool, batch)
    torch.testing.assert_close(out.double(), by_hand(q, k_pool, v_pool, batch), atol=1e-5, rtol=1e-5)


def test_query_tiles_cover_every_query_once_and_only_real_rows():
    cu = torch.tensor([0, 32, 33, 100, 100, 164], dtype=torch.int32)  # one empty row
    row, start = pa.query_tiles(cu, 16, tile_m=32)
    covered = []
    for r, s in zip(row.tolist(), start.tolist()):
        if r >= 0:
            covered += [(r, q) for q in range(s, min(s + 32, cu[r + 1].item()))]
    expected = [(r, q) for r in range(5) for q in range(cu[r].item(), cu[r + 1].item())]
    assert sorted(covered) == expected
    assert (row[8:] == -1).all()


@pytest.mark.skipif(not CUDA, reason="needs CUDA and Triton (the device tool)")
@pytest.mark.parametrize("splits", [None, 1, 4])
@pytest.mark.parametrize("q_lens,kv_lens,heads,kv_heads,page_size,causal", CASES)
def test_cuda_kernel_matches_sdpa_path(monkeypatch, splits, q_lens, kv_lens, heads, kv_heads, page_size, causal):
    if splits is not None:
        monkeypatch.setattr(pa, "num_splits", lambda *_: splits)
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        q, k_pool, v_pool, batch = make_rows(q_lens, kv_lens, heads, kv_heads, 128, page_size, dtype, causal=causal)
        expected = pa.paged_attention_sdpa(q.double(), k_pool.double(), v_pool.double(), batch)
        cuda = pa.PagedBatch(batch.cu_q.cuda(), batch.kv_len.cuda(), batch.page_table.cuda(), page_size,
                             q_start=batch.q_start.cuda(), causal=batch.causal.cuda())
        cuda.tile_row, cuda.tile_start = pa.query_tiles(cuda.cu_q, -(-sum(q_lens) // pa.TILE_M) + len(q_lens))
        out = pa.paged_attention(q.cuda(), k_pool.cuda(), v_pool.cuda(), cuda).cpu().double()
        assert (out - expected).norm() / expected.norm() < tol, (dtype, splits)


@pytest.mark.skipif(not CUDA, reason="needs CUDA and Triton (the device tool)")
def test_cuda_kernel_replays_in_a_graph_with_new_lengths():
    # a graph captured for one set of lengths and pages decodes another: they are data
    q, k_pool, v_pool, first = make_rows([32, 32], [100, 300], 4, 4, 128, 64, torch.bfloat16)
    _, _, _, second = make_rows([20, 44], [64, 129], 4, 4, 128, 64, torch.bfloat16, seed=1)
    q, k_pool, v_pool = q.cuda(), k_pool.cuda(), v_pool.cuda()
    cu_q, kv_len = first.cu_q.cuda(), first.kv_len.cuda()
    table = torch.zeros(2, 8, dtype=torch.int32, device="cuda")
    table[:, : first.page_table.shape[1]] = first.page_table.cuda()

    def run():
        row, start = pa.query_tiles(cu_q, 6)
        return pa.paged_attention(q, k_pool, v_pool, pa.PagedBatch(cu_q, kv_len, table, 64, row, start))

    run()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run()
    cu_q.copy_(second.cu_q), kv_len.copy_(second.kv_len)
    table.zero_()
    table[:, : second.page_table.shape[1]] = second.page_table.cuda()
    graph.replay()
    expected = pa.paged_attention_sdpa(q.cpu().double(), k_pool.cpu().double(), v_pool.cpu().double(), second)
    assert (out.cpu().double() - expected).norm() / expected.norm() < 2e-2
