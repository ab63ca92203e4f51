"""Attention of ragged query segments over a paged K/V cache.

One engine step packs every live sequence's query tokens into one [N, H, D] tensor: a
refresh brings its whole sequence, a dual step its block, a prefix step its block and
everything after it. Row r owns the packed queries [cu_q[r], cu_q[r + 1]) and attends,
bidirectionally, to the first kv_len[r] positions of its sequence, whose keys and values
sit in the pool pages page_table[r, 0], page_table[r, 1], ... (position p in page
p // page_size, at offset p % page_size). Each row reads only its own keys. A row with a
causal block size c > 0 is block-causal (a block-diffusion model's prefill): its query at
position p (its queries sit at q_start[r], q_start[r] + 1, ...) sees only the keys before the
end of p's block, min(kv_len[r], (p // c + 1) * c).

`paged_attention` runs a Triton kernel on CUDA (queries tiled per row; the tile table is
built on the device, so a CUDA graph of a whole forward stays valid whatever the lengths);
elsewhere, `paged_attention_sdpa` gathers each row's pages and calls SDPA, row by row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs: the SDPA path runs
    triton = None

TILE_M = 64  # query rows per kernel program (measured: 32 and 64 tie on dual steps, 64 wins on refreshes)


@dataclass
class PagedBatch:
    """Where a batch's queries come from and which keys they read (all int32 on the device).

    cu_q [R + 1]: packed query offsets; kv_len [R]: keys per row; page_table [R, max_pages];
    tile_row / tile_start [T]: for the kernel, each query tile's row (-1: no work) and first
    packed query; q_start [R]: each row's first query position, causal [R]: its causal block
    size (0: it sees all kv_len keys; None: no row is causal). `host` holds (cu_q, kv_len) or
    (cu_q, kv_len, q_start, causal) as lists where the caller has them (CPU path).
    """

    cu_q: torch.Tensor
    kv_len: torch.Tensor
    page_table: torch.Tensor
    page_size: int
    tile_row: torch.Tensor | None = None
    tile_start: torch.Tensor | None = None
    host: tuple[list[int], ...] | None = None
    q_start: torch.Tensor | None = None
    causal: torch.Tensor | None = None


def query_tiles(cu_q: torch.Tensor, num_tiles: int, tile_m: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """tile_row, tile_start [num_tiles] for rows with queries [cu_q[r], cu_q[r + 1]): each row's
    queries split into tiles of tile_m; tiles past the last row's get row -1. Device ops only."""
    tile_m = tile_m or TILE_M
    q_len = cu_q[1:] - cu_q[:-1]
    tiles = (q_len + tile_m - 1) // tile_m
    cu_tiles = torch.cumsum(tiles, 0)
    t = torch.arange(num_tiles, device=cu_q.device, dtype=cu_tiles.dtype)
    row = torch.searchsorted(cu_tiles, t, right=True)
    in_range = row < q_len.shape[0]
    row_c = row.clamp(max=q_len.shape[0] - 1)
    first_tile = cu_tiles[row_c] - tiles[row_c]
    start = cu_q[:-1][row_c] + (t - first_tile) * tile_m
    return torch.where(in_range, row_c, -1).int(), start.int()


def paged_attention(q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, batch: PagedBatch,
                    scale: float | None = None) -> torch.Tensor:
    """q [N, H, D]; k_pool, v_pool [pages, page_size, H_kv, D]; returns [N, H, D]."""
    if q.is_cuda and triton is not None and batch.tile_row is not None:
        return _paged_attention_triton(q, k_pool, v_pool, batch, scale)
    return paged_attention_sdpa(q, k_pool, v_pool, batch, scale)


def gather_keys(pool: torch.Tensor, pages: torch.Tensor, length: int) -> torch.Tensor:
    """[length, H_kv, D]: one row's first `length` positions from its pages."""
    page_size = pool.shape[1]
    n_pages = -(-length // page_size)
    return pool[pages[:n_pages].long()].reshape(n_pages * page_size, *pool.shape[2:])[:length]


def paged_attention_sdpa(q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, batch: PagedBatch,
                         scale: float | None = None) -> torch.Tensor:
    """Reference path: each row's keys gathered from its pages, then SDPA, one row at a time."""
    cu_q, kv_len, *causal_rows = batch.host or (batch.cu_q.tolist(), batch.kv_len.tolist())
    if not causal_rows and batch.causal is not None:
        causal_rows = [batch.q_start.tolist(), batch.causal.tolist()]
    q_start, causal = causal_rows or ([0] * len(kv_len), [0] * len(kv_len))
    out = torch.zeros_like(q)
    n_heads, n_kv = q.shape[1], k_pool.shape[2]
    for r, length in enumerate(kv_len):
        lo, hi = cu_q[r], cu_q[r + 1]
        if hi == lo:
            continue
        keys = gather_keys(k_pool, batch.page_table[r], length).transpose(0, 1)
        values = gather_keys(v_pool, batch.page_table[r], length).transpose(0, 1)
        if n_kv != n_heads:
            keys = keys.repeat_interleave(n_heads // n_kv, dim=0)
            values = values.repeat_interleave(n_heads // n_kv, dim=0)
        mask = None
        if causal[r]:
            mask = block_causal_mask(q_start[r], hi - lo, length, causal[r], q.device)
        attn = F.scaled_dot_product_attention(q[lo:hi].transpose(0, 1)[None], keys[None], values[None],
                                              attn_mask=mask, scale=scale)
        out[lo:hi] = attn[0].transpose(0, 1)
    return out


def block_causal_mask(q_start: int, n_queries: int, n_keys: int, block: int, device=None) -> torch.Tensor:
    """Bool [n_queries, n_keys]: the query at position q_start + i sees key k when k lies in its
    block of size `block` or an earlier one."""
    positions = torch.arange(q_start, q_start + n_queries, device=device)
    return torch.arange(n_keys, device=device)[None, :] < ((positions // block + 1) * block)[:, None]


if triton is not None:

    @triton.jit
    def _paged_attention_kernel(Q, K, V, O, LSE, cu_q, kv_len, page_table, tile_row, tile_start, q_start, causal,
                                stride_qn, stride_qh, stride_kp, stride_ks, stride_kh, stride_pt,
                                stride_os, stride_on, stride_oh, stride_ls, stride_ln, scale_log2,
                                GROUP: tl.constexpr, PAGE: tl.constexpr, BLOCK_M: tl.constexpr,
                                BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, SPLITS: tl.constexpr,
                                IEEE: tl.constexpr):
        """One program: a tile of BLOCK_M queries of one row, one head, one split of the row's keys.
        With SPLITS > 1 it writes a partial result (normalised output and its log2-sum-exp) for
        _combine_splits; with one split, the output itself."""
        tile = tl.program_id(0)
        head = tl.program_id(1)
        split = tl.program_id(2)
        row = tl.load(tile_row + tile)
        if row < 0:
            return
        q_first = tl.load(tile_start + tile)
        q_end = tl.load(cu_q + row + 1)
        n_keys = tl.load(kv_len + row)
        kv_head = head // GROUP
        offs_m = q_first + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, HEAD_DIM)
        m_ok = offs_m < q_end
        # each query's key limit: all n_keys, or (block-causal rows) the end of its own block
        block = tl.load(causal + row)
        position = tl.load(q_start + row) + offs_m - tl.load(cu_q + row)
        limit = tl.where(block > 0, tl.minimum((position // tl.maximum(block, 1) + 1) * block, n_keys), n_keys)
        tile_keys = tl.max(tl.where(m_ok, limit, 0), 0)
        per_split = tl.cdiv(tl.cdiv(n_keys, BLOCK_N), SPLITS) * BLOCK_N
        lo = split * per_split
        hi = tl.minimum(lo + per_split, tile_keys)
        q = tl.load(Q + offs_m.to(tl.int64)[:, None] * stride_qn + head * stride_qh + offs_d[None, :],
                    mask=m_ok[:, None], other=0.0)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        offs_n = tl.arange(0, BLOCK_N)
        pages = page_table + row.to(tl.int64) * stride_pt
        for start in tl.range(lo, hi, BLOCK_N, num_stages=3):
            page = tl.load(pages + start // PAGE).to(tl.int64)
            n_ok = start + offs_n < hi
            kv_off = page * stride_kp + (start % PAGE + offs_n)[:, None] * stride_ks + kv_head * stride_kh
            k = tl.load(K + kv_off + offs_d[None, :], mask=n_ok[:, None], other=0.0)
            if IEEE:
                s = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                s = tl.dot(q, tl.trans(k))
            s = tl.where(n_ok[None, :] & (start + offs_n[None, :] < limit[:, None]), s * scale_log2, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            # a query whose keys all lie past its limit so far keeps m = -inf: subtract 0 instead
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.math.exp2(m_i - m_safe)
            p = tl.math.exp2(s - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(V + kv_off + offs_d[None, :], mask=n_ok[:, None], other=0.0)
            if IEEE:
                acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32), input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        out = acc / l_i[:, None]
        o_ptr = O + split * stride_os + offs_m.to(tl.int64)[:, None] * stride_on + head * stride_oh + offs_d[None, :]
        tl.store(o_ptr, out.to(O.dtype.element_ty), mask=m_ok[:, None])
        if SPLITS > 1:  # an empty split leaves -inf: it weighs nothing in the combine
            tl.store(LSE + split * stride_ls + offs_m.to(tl.int64) * stride_ln + head, m_i + tl.log2(l_i), mask=m_ok)

    @triton.jit
    def _combine_splits(O_PART, LSE, O, n_rows, stride_os, stride_on, stride_oh, stride_ls, stride_ln,
                        stride_qn, stride_qh, SPLITS: tl.constexpr, HEAD_DIM: tl.constexpr):
        token = tl.program_id(0)
        head = tl.program_id(1)
        if token >= tl.load(n_rows):
            return
        splits = tl.arange(0, SPLITS)
        lse = tl.load(LSE + splits * stride_ls + token * stride_ln + head)
        weight = tl.math.exp2(lse - tl.max(lse, 0))
        weight = weight / tl.sum(weight, 0)
        offs_d = tl.arange(0, HEAD_DIM)
        parts = tl.load(O_PART + splits[:, None] * stride_os + token * stride_on + head * stride_oh + offs_d[None, :])
        out = tl.sum(tl.where(weight[:, None] > 0, parts * weight[:, None], 0.0), 0)  # empty splits hold NaN
        tl.store(O + token.to(tl.int64) * stride_qn + head * stride_qh + offs_d, out.to(O.dtype.element_ty))


def num_splits(num_tiles: int, n_heads: int, sms: int) -> int:
    """Key splits that give the GPU about two programs per multiprocessor (1 when the query
    tiles alone do: at batch 1 a dual step is one tile per head)."""
    programs = num_tiles * n_heads
    splits = 1
    while programs * splits < 2 * sms and splits < 8:
        splits *= 2
    return splits


_SMS: dict = {}


def _multiprocessors(device: torch.device) -> int:
    if device not in _SMS:
        _SMS[device] = torch.cuda.get_device_properties(device).multi_processor_count
    return _SMS[device]


def _paged_attention_triton(q, k_pool, v_pool, batch: PagedBatch, scale):
    n, n_heads, head_dim = q.shape
    page_size, n_kv = k_pool.shape[1], k_pool.shape[2]
    scale = head_dim ** -0.5 if scale is None else scale
    out = torch.empty_like(q)
    tiles = batch.tile_row.shape[0]
    # from the query count, not the grid: the grid is sized for the worst case of many rows
    splits = num_splits(-(-n // TILE_M), n_heads, _multiprocessors(q.device))
    if splits > 1:
        o_part = torch.empty(splits, n, n_heads, head_dim, dtype=torch.float32, device=q.device)
        lse = torch.empty(splits, n, n_heads, dtype=torch.float32, device=q.device)
    else:
        o_part, lse = out[None], out  # written in place; lse unused
    q_start = batch.q_start if batch.q_start is not None else batch.kv_len
    causal = batch.causal if batch.causal is not None else torch.zeros_like(batch.kv_len)
    _paged_attention_kernel[(tiles, n_heads, splits)](
        q, k_pool, v_pool, o_part, lse, batch.cu_q, batch.kv_len, batch.page_table, batch.tile_row, batch.tile_start,
        q_start, causal,
        q.stride(0), q.stride(1), k_pool.stride(0), k_pool.stride(1), k_pool.stride(2), batch.page_table.stride(0),
        o_part.stride(0), o_part.stride(1), o_part.stride(2), lse.stride(0), lse.stride(1), scale * 1.4426950408889634,
        GROUP=n_heads // n_kv, PAGE=page_size, BLOCK_M=TILE_M, BLOCK_N=min(page_size, 64), HEAD_DIM=head_dim,
        SPLITS=splits, IEEE=q.dtype == torch.float32, num_warps=4,
    )
    if splits > 1:
        _combine_splits[(n, n_heads)](
            o_part, lse, out, batch.cu_q[-1:], o_part.stride(0), o_part.stride(1), o_part.stride(2),
            lse.stride(0), lse.stride(1), out.stride(0), out.stride(1), SPLITS=splits, HEAD_DIM=head_dim)
    return out
