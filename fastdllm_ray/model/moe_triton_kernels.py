"""The Triton kernels of model/moe_triton.py (see there for the design).

A pair is one (token, expert) product: pair id t * STRIDE + j, j < TOP_K for the token's
routed experts and, with SHARED, j = TOP_K for the shared expert, which every token goes
through and which the kernels treat as expert number `experts` (its own weight tensors).
The sentinel `pairs` (every pair's count) marks padding rows.
"""

from __future__ import annotations

try:
    import triton
    import triton.language as tl

    jit = triton.jit
except ImportError:  # the package imports every module; without Triton these are never launched
    def jit(fn):
        return fn


@jit
def align_kernel(chosen, sorted_ids, block_expert, rows_used, routed, experts,
                 TOP_K: tl.constexpr, SHARED: tl.constexpr, EXPERTS_P2: tl.constexpr, BLOCK_M: tl.constexpr,
                 CHUNK: tl.constexpr):
    """One program per expert (and one for the shared one): every program counts all routed
    pairs (one histogram read of `chosen`), takes its run's place from the padded counts, and
    writes its pairs' ids in token order, its padding, and its blocks' expert."""
    expert = tl.program_id(0)
    STRIDE: tl.constexpr = TOP_K + SHARED
    tokens = routed // TOP_K
    pairs = tokens * STRIDE
    ids = tl.arange(0, EXPERTS_P2)
    counts = tl.zeros([EXPERTS_P2], tl.int32)
    for start in range(0, routed, CHUNK):
        offs = start + tl.arange(0, CHUNK)
        inside = offs < routed
        counts += tl.histogram(tl.load(chosen + offs, mask=inside, other=0).to(tl.int32), EXPERTS_P2, mask=inside)
    padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    routed_rows = tl.sum(padded, 0)
    shared_rows = (tokens + BLOCK_M - 1) // BLOCK_M * BLOCK_M * SHARED
    if expert == 0:
        tl.store(rows_used, routed_rows + shared_rows)
    if expert < experts:
        mine = ids == expert
        run_start = tl.sum(tl.where(mine, tl.cumsum(padded, 0) - padded, 0), 0)
        run_len = tl.sum(tl.where(mine, padded, 0), 0)
        count = tl.sum(tl.where(mine, counts, 0), 0)
        scan = routed
    else:  # the shared expert: every token, after the routed runs
        run_start = routed_rows
        run_len = shared_rows
        count = tokens
        scan = tokens
    if count > 0:
        placed = 0
        for start in range(0, scan, CHUNK):
            offs = start + tl.arange(0, CHUNK)
            if expert < experts:
                hit = tl.load(chosen + offs, mask=offs < routed, other=-1).to(tl.int32) == expert
                pair = offs + offs // TOP_K * SHARED
            else:
                hit = offs < tokens
                pair = offs * STRIDE + TOP_K
            rank = placed + tl.cumsum(hit.to(tl.int32), 0) - 1
            tl.store(sorted_ids + run_start + rank, pair, mask=hit)
            placed += tl.sum(hit.to(tl.int32), 0)
        pad = count + tl.arange(0, BLOCK_M)
        tl.store(sorted_ids + run_start + pad, pairs, mask=pad < run_len)
        first_block = run_start // BLOCK_M
        for b in range(first_block, first_block + run_len // BLOCK_M):
            tl.store(block_expert + b, expert)


@jit
def gate_up_kernel(x, w, shared_gate, shared_up, h, sorted_ids, block_expert, rows_used, pairs, experts, hidden, inter,
                   stride_x, stride_we, stride_wn, stride_h,
                   STRIDE: tl.constexpr, SHARED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr, IEEE: tl.constexpr):
    """h = silu(x W_gate^T) * (x W_up^T) for a block of one expert's rows and BLOCK_N columns."""
    n_tiles = tl.cdiv(inter, BLOCK_N)
    work = tl.load(rows_used) // BLOCK_M * n_tiles
    # persistent: the grid is sized for the GPU, not for the worst routing, so no program
    # starts only to find its block unused; a block's tiles run side by side (x stays in L2)
    for item in range(tl.program_id(0), work, tl.num_programs(0)):
        block, tile = item // n_tiles, item % n_tiles
        rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
        pair = tl.load(sorted_ids + rows)
        real = pair < pairs
        token = (pair // STRIDE).to(tl.int64)
        expert = tl.load(block_expert + block).to(tl.int64)
        gate_rows = w + expert * stride_we
        up_rows = gate_rows + inter * stride_wn
        if SHARED:  # a constexpr first: without a shared expert the branch is not compiled
            if expert == experts:
                gate_rows = shared_gate
                up_rows = shared_up
        cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < inter
        ks = tl.arange(0, BLOCK_K)
        x_ptrs = x + token[:, None] * stride_x + ks[None, :]
        g_ptrs = gate_rows + cols[None, :] * stride_wn + ks[:, None]  # [K, N]: W_gate^T
        u_ptrs = up_rows + cols[None, :] * stride_wn + ks[:, None]
        acc_g = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        acc_u = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for k in range(0, hidden, BLOCK_K):
            if EVEN_K:
                a = tl.load(x_ptrs, mask=real[:, None], other=0.0)
                g = tl.load(g_ptrs, mask=col_ok[None, :], other=0.0)
                u = tl.load(u_ptrs, mask=col_ok[None, :], other=0.0)
            else:
                k_ok = k + ks < hidden
                a = tl.load(x_ptrs, mask=real[:, None] & k_ok[None, :], other=0.0)
                g = tl.load(g_ptrs, mask=col_ok[None, :] & k_ok[:, None], other=0.0)
                u = tl.load(u_ptrs, mask=col_ok[None, :] & k_ok[:, None], other=0.0)
            if IEEE:
                acc_g = tl.dot(a, g, acc_g, input_precision="ieee")
                acc_u = tl.dot(a, u, acc_u, input_precision="ieee")
            else:
                acc_g = tl.dot(a, g, acc_g)
                acc_u = tl.dot(a, u, acc_u)
            x_ptrs += BLOCK_K
            g_ptrs += BLOCK_K
            u_ptrs += BLOCK_K
        dtype = h.dtype.element_ty
        gate = acc_g.to(dtype).to(tl.float32)  # the reference's projections are rounded
        up = acc_u.to(dtype).to(tl.float32)
        act = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)  # torch's silu, rounded
        out_ptrs = h + rows.to(tl.int64)[:, None] * stride_h + cols[None, :]
        tl.store(out_ptrs, (act * up).to(dtype), mask=col_ok[None, :])


@jit
def down_kernel(h, w, shared_down, pair_out, sorted_ids, block_expert, rows_used, pairs, experts, hidden, inter,
                stride_h, stride_we, stride_wn, stride_out,
                SHARED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                EVEN_K: tl.constexpr, IEEE: tl.constexpr):
    """h W_down^T for a block of one expert's rows, each row stored at its pair's place."""
    n_tiles = tl.cdiv(hidden, BLOCK_N)
    work = tl.load(rows_used) // BLOCK_M * n_tiles
    for item in range(tl.program_id(0), work, tl.num_programs(0)):  # persistent, as gate_up_kernel
        block, tile = item // n_tiles, item % n_tiles
        rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
        pair = tl.load(sorted_ids + rows)
        real = pair < pairs
        expert = tl.load(block_expert + block).to(tl.int64)
        down_rows = w + expert * stride_we
        if SHARED:
            if expert == experts:
                down_rows = shared_down
        cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < hidden
        ks = tl.arange(0, BLOCK_K)
        a_ptrs = h + rows.to(tl.int64)[:, None] * stride_h + ks[None, :]
        w_ptrs = down_rows + cols[None, :] * stride_wn + ks[:, None]  # [K, N]: W_down^T
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for k in range(0, inter, BLOCK_K):
            if EVEN_K:
                a = tl.load(a_ptrs)
                b = tl.load(w_ptrs, mask=col_ok[None, :], other=0.0)
            else:
                k_ok = k + ks < inter
                a = tl.load(a_ptrs, mask=k_ok[None, :], other=0.0)
                b = tl.load(w_ptrs, mask=col_ok[None, :] & k_ok[:, None], other=0.0)
            if IEEE:
                acc = tl.dot(a, b, acc, input_precision="ieee")
            else:
                acc = tl.dot(a, b, acc)
            a_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        out_ptrs = pair_out + pair.to(tl.int64)[:, None] * stride_out + cols[None, :]
        tl.store(out_ptrs, acc.to(pair_out.dtype.element_ty), mask=real[:, None] & col_ok[None, :])


@jit
def combine_kernel(pair_out, weights, out, hidden, TOP_K: tl.constexpr, SHARED: tl.constexpr, BLOCK: tl.constexpr):
    """out[t] = sum_j weights[t, j] * pair_out[t, j] in float32, rounded; with SHARED, then
    + the shared expert's row, rounded again (the reference adds two bf16 tensors)."""
    token = tl.program_id(0).to(tl.int64)
    STRIDE: tl.constexpr = TOP_K + SHARED
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < hidden
    dtype = out.dtype.element_ty
    acc = tl.zeros([BLOCK], tl.float32)
    for j in tl.static_range(TOP_K):
        weight = tl.load(weights + token * TOP_K + j)
        row = tl.load(pair_out + (token * STRIDE + j) * hidden + cols, mask=ok, other=0.0)
        acc += row.to(tl.float32) * weight
    if SHARED:
        shared = tl.load(pair_out + (token * STRIDE + TOP_K) * hidden + cols, mask=ok, other=0.0)
        acc = acc.to(dtype).to(tl.float32) + shared.to(tl.float32)
    tl.store(out + token * hidden + cols, acc.to(dtype), mask=ok)
