"""One CUDA kernel (Triton) for what follows the fused q/k/v projection in a cached forward:
RoPE on q and k, and the K/V write into the cache.

Unfused, these are two RoPE kernels over q and k and two row scatters into the cache, each
reading and writing the whole activation; at batch 32 x block 32 they cost more than the
attention itself. Here each program reads one token's q/k/v row once, writes the rotated
q to a fresh buffer and the rotated k and the v straight into their cache rows. The math is
`apply_rope`'s (float32, t * cos + rotate_half(t) * sin, then the cache dtype).

Used on CUDA when Triton is importable (see `available`); everywhere else the model runs
`apply_rope` and `CacheView.write`.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs: the unfused path runs
    triton = None


def available(device: torch.device) -> bool:
    return triton is not None and device.type == "cuda"


if triton is not None:

    @triton.jit
    def _rope_write_kernel(qkv, cos, sin, q_out, k_rows, v_rows, rows, qkv_stride,
                           N_HEADS: tl.constexpr, KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
                           HEADS_P2: tl.constexpr, KV_HEADS_P2: tl.constexpr):
        token = tl.program_id(0)
        HALF: tl.constexpr = HEAD_DIM // 2
        d = tl.arange(0, HALF)
        c = tl.load(cos + token * HEAD_DIM + d)[None, :]
        s = tl.load(sin + token * HEAD_DIM + d)[None, :]
        src = qkv + token.to(tl.int64) * qkv_stride

        heads = tl.arange(0, HEADS_P2)[:, None]
        offs = heads * HEAD_DIM + d[None, :]
        ok = heads < N_HEADS
        t1 = tl.load(src + offs, mask=ok).to(tl.float32)
        t2 = tl.load(src + offs + HALF, mask=ok).to(tl.float32)
        dst = q_out + token.to(tl.int64) * (N_HEADS * HEAD_DIM)
        tl.store(dst + offs, (t1 * c - t2 * s).to(q_out.dtype.element_ty), mask=ok)
        tl.store(dst + offs + HALF, (t2 * c + t1 * s).to(q_out.dtype.element_ty), mask=ok)

        kv_heads = tl.arange(0, KV_HEADS_P2)[:, None]
        kv_offs = kv_heads * HEAD_DIM + d[None, :]
        kv_ok = kv_heads < KV_HEADS
        row = tl.load(rows + token).to(tl.int64) * (KV_HEADS * HEAD_DIM)
        k_src = src + N_HEADS * HEAD_DIM
        t1 = tl.load(k_src + kv_offs, mask=kv_ok).to(tl.float32)
        t2 = tl.load(k_src + kv_offs + HALF, mask=kv_ok).to(tl.float32)
        tl.store(k_rows + row + kv_offs, (t1 * c - t2 * s).to(k_rows.dtype.element_ty), mask=kv_ok)
        tl.store(k_rows + row + kv_offs + HALF, (t2 * c + t1 * s).to(k_rows.dtype.element_ty), mask=kv_ok)
        v_src = k_src + KV_HEADS * HEAD_DIM
        for half in tl.static_range(2):
            v = tl.load(v_src + kv_offs + half * HALF, mask=kv_ok)
            tl.store(v_rows + row + kv_offs + half * HALF, v, mask=kv_ok)


def rope_and_write(qkv: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor, k_rows: torch.Tensor,
                   v_rows: torch.Tensor, rows: torch.Tensor, n_heads: int, n_kv_heads: int) -> torch.Tensor:
    """qkv [B, T, (H + 2 H_kv) D] -> rotated q [B, T, H, D]; rotated k and v go to k_rows/v_rows
    (KVCache.rows) at `rows` [B * T]. sin, cos: [B, T, 1, D] float32 (rope_tables)."""
    B, T, width = qkv.shape
    head_dim = width // (n_heads + 2 * n_kv_heads)
    qkv = qkv.reshape(B * T, width)
    if qkv.stride(1) != 1:
        qkv = qkv.contiguous()
    q = torch.empty(B, T, n_heads, head_dim, dtype=qkv.dtype, device=qkv.device)
    _rope_write_kernel[(B * T,)](
        qkv, cos.reshape(B * T, head_dim), sin.reshape(B * T, head_dim), q, k_rows, v_rows, rows, qkv.stride(0),
        N_HEADS=n_heads, KV_HEADS=n_kv_heads, HEAD_DIM=head_dim,
        HEADS_P2=triton.next_power_of_2(n_heads), KV_HEADS_P2=triton.next_power_of_2(n_kv_heads),
        num_warps=4,
    )
    return q


def usable(cfg, device: torch.device) -> bool:
    """The kernel needs Triton on CUDA and a power-of-two head size (its vector width)."""
    return available(device) and cfg.head_dim >= 2 and cfg.head_dim & (cfg.head_dim - 1) == 0
