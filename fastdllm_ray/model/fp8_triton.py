"""Weight-only FP8 matmul in Triton: y = x @ (qweight * scale[:, None]).T + bias, with x in
bf16, qweight [N, K] float8 e4m3 and one float32 scale per output channel.

Each program owns a BLOCK_M x BLOCK_N tile of y and walks K: it loads a tile of FP8 weights
(half the bytes of bf16), converts it to bf16 in registers and runs the bf16 tensor-core dot,
accumulating in float32; the per-channel scale (and bias) are applied once at the end. At the
engine's small steps (a block of 32 tokens per sequence) the cost is reading the weights, so
this halves it; at large steps the math is bf16's, and `scaled_mm` (FP8 tensor cores) wins.

Tiles are autotuned per (token count rounded up to a power of two, N, K) the first time a
shape runs, which the engine does at warm-up, outside any CUDA graph capture.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs: FP8 weights run emulated there (model/fp8.py)
    triton = None


def available() -> bool:
    return triton is not None


if triton is not None:

    def _configs() -> list:
        # a handful per tile height: each is compiled once (about a second) and timed per shape
        shapes = [(bn, bk, 4, 4) for bn in (32, 64, 128) for bk in (128, 256)] + [(128, 128, 8, 3)]
        return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=warps, num_stages=stages)
                for bm in (16, 32, 64, 128) for bn, bk, warps, stages in shapes]

    def _prune(configs, named_args, **kwargs):
        """One tile height per step size: the smallest that covers the tokens (at most 128)."""
        m_key = named_args["M_KEY"]
        height = min(max(16, m_key), 128)
        kept = [c for c in configs if c.kwargs["BLOCK_M"] == height]
        if height == 128:  # large steps: wide tiles only (this kernel's place is small steps anyway)
            kept = [c for c in kept if c.kwargs["BLOCK_N"] >= 64]
        return kept

    def _bench(kernel_call, quantiles):
        # short runs: dozens of shapes are tuned at warm-up, each in well under a second
        return triton.testing.do_bench(kernel_call, warmup=5, rep=20, quantiles=quantiles)

    @triton.autotune(configs=_configs(), key=["M_KEY", "N", "K"], prune_configs_by={"early_config_prune": _prune},
                     do_bench=_bench)
    @triton.jit
    def _fp8_weight_only_kernel(x_ptr, w_ptr, s_ptr, b_ptr, y_ptr, M, N, K, M_KEY, stride_xm, stride_wn, stride_ym,
                                HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                BLOCK_K: tl.constexpr):
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        m_ok = rm[:, None] < M
        n_ok = rn[None, :] < N
        x_ptrs = x_ptr + rm[:, None].to(tl.int64) * stride_xm + rk[None, :]
        w_ptrs = w_ptr + rn[None, :].to(tl.int64) * stride_wn + rk[:, None]  # a [BLOCK_K, BLOCK_N] view of W^T
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, K, BLOCK_K):
            k_ok = rk + k < K
            x = tl.load(x_ptrs, mask=m_ok & k_ok[None, :], other=0.0)
            w = tl.load(w_ptrs, mask=n_ok & k_ok[:, None], other=0.0)
            acc = tl.dot(x, w.to(x.dtype), acc)
            x_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        n_in = rn < N
        acc = acc * tl.load(s_ptr + rn, mask=n_in, other=0.0)[None, :]
        if HAS_BIAS:
            acc += tl.load(b_ptr + rn, mask=n_in, other=0.0).to(tl.float32)[None, :]
        y_ptrs = y_ptr + rm[:, None].to(tl.int64) * stride_ym + rn[None, :]
        tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=m_ok & n_ok)


def weight_only_linear(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor,
                       bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [M, K] (bf16 or fp16), qweight [N, K] float8 e4m3, scale [N] float32, bias [N] or None -> [M, N]."""
    if triton is None:
        raise RuntimeError("the FP8 weight-only kernel needs Triton (FASTDLLM_FP8_KERNEL=scaled_mm does not)")
    if x.stride(-1) != 1:
        x = x.contiguous()
    M, K = x.shape
    N = qweight.shape[0]
    y = torch.empty(M, N, dtype=x.dtype, device=x.device)
    m_key = triton.next_power_of_2(max(M, 16))

    def grid(meta):
        return triton.cdiv(N, meta["BLOCK_N"]), triton.cdiv(M, meta["BLOCK_M"])

    _fp8_weight_only_kernel[grid](x, qweight, scale, bias if bias is not None else scale, y, M, N, K, m_key,
                                  x.stride(0), qweight.stride(0), y.stride(0), HAS_BIAS=bias is not None)
    return y
