"""LLaDA2.0's routed experts as fused Triton kernels: each touched expert's weights read once.

At a decode-sized step (32 tokens x 8 experts over 256) most touched experts get one to three
tokens, so the layer is a read of those experts' weights; torch._grouped_mm runs it at about
2x that read. Here, as in vLLM's and SGLang's fused MoE: the (token, expert) pairs are sorted
by expert and each expert's run padded to a multiple of BLOCK_M rows; a program owns one
block of rows (one expert) and one tile of output columns, so it streams that expert's weight
tile once for all its rows. Four launches, no host sync (a CUDA graph of the layer holds for
any routing; buffers are sized for the worst case of the token count):

1. `_align_kernel` (one program per expert): counts the pairs of every expert, pads them to
   BLOCK_M, and writes its own pairs' ids (token order kept) into its run, padding slots as
   the sentinel `pairs`, its blocks' expert id, and (expert 0) the rows used.
2. `_gate_up_kernel`: h = silu(x W_gate^T) * (x W_up^T) for a block's rows, two float32
   accumulators, SwiGLU in the epilogue.
3. `_down_kernel`: h W_down^T, each row stored at its pair's place (token-major).
4. `_combine_kernel`: out[t] = sum_j weights[t, j] * pair_out[t * k + j] in float32.

Rounding follows the bf16 reference (`routed_experts` over torch._grouped_mm, the model's
moe_infer): the projections, silu(gate), the product and each expert's output are rounded to
the input dtype where the reference's tensors are; accumulation is float32 throughout.
Float32 inputs use IEEE float32 dots (no TF32).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs and CI: the model runs torch._grouped_mm
    triton = None

DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def interpreting() -> bool:
    """Triton's interpreter (TRITON_INTERPRET=1 before triton is imported) runs the kernels on the CPU."""
    return triton is not None and os.environ.get("TRITON_INTERPRET") == "1"


def available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `fused_experts` can run here: Triton on CUDA, or its interpreter on the CPU."""
    if triton is None or dtype not in DTYPES:
        return False
    return device.type == "cuda" or (device.type == "cpu" and interpreting())


@dataclass(frozen=True)
class Tile:
    """One GEMM kernel's launch shape: output columns and reduction width per step, warps, stages."""

    block_n: int
    block_k: int
    warps: int = 4
    stages: int = 3


@dataclass(frozen=True)
class MoEConfig:
    block_m: int  # rows (pairs of one expert) per program
    gate_up: Tile  # block_n counts gate columns (the program also does as many up columns)
    down: Tile


# Few pairs an expert (decode-like steps): 16-row blocks (the mma's height), narrow tiles for
# many programs in flight. Many pairs an expert: 64-row blocks (Hopper's wgmma), so an expert's
# weights are read by one block rather than re-read from L2 by several.
SMALL = MoEConfig(16, gate_up=Tile(32, 128), down=Tile(64, 128))
MEDIUM = MoEConfig(32, gate_up=Tile(64, 128), down=Tile(128, 64))
LARGE = MoEConfig(64, gate_up=Tile(64, 64, warps=4, stages=4), down=Tile(128, 64, warps=4, stages=4))


PROGRAMS_PER_SM = 8  # resident ones are fewer (shared memory): the rest queue, but never idle


def choose_config(pairs: int, experts: int, dtype: torch.dtype = torch.bfloat16) -> MoEConfig:
    """By mean pairs an expert (a shape, so a captured graph keeps its config). Float32 (IEEE
    dots on CUDA cores, twice the bytes) takes the small tiles whatever the size: the larger
    ones spill registers."""
    if dtype == torch.float32:
        return SMALL
    mean = pairs / experts
    return SMALL if mean <= 8 else MEDIUM if mean <= 24 else LARGE


def max_rows(pairs: int, experts: int, block_m: int) -> int:
    """Rows of the sorted, padded pairs in the worst case: every touched expert wastes at most
    block_m - 1 rows, and at most min(experts, pairs) are touched."""
    return pairs + min(experts, pairs) * (block_m - 1)


if triton is not None:

    @triton.jit
    def _align_kernel(chosen, sorted_ids, block_expert, rows_used, pairs,
                      EXPERTS_P2: tl.constexpr, BLOCK_M: tl.constexpr, CHUNK: tl.constexpr):
        expert = tl.program_id(0)
        ids = tl.arange(0, EXPERTS_P2)
        counts = tl.zeros([EXPERTS_P2], tl.int32)
        for start in range(0, pairs, CHUNK):
            offs = start + tl.arange(0, CHUNK)
            inside = offs < pairs
            chunk = tl.load(chosen + offs, mask=inside, other=0).to(tl.int32)
            counts += tl.histogram(chunk, EXPERTS_P2, mask=inside)
        padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
        ends = tl.cumsum(padded, 0)
        mine = ids == expert
        run_start = tl.sum(tl.where(mine, ends - padded, 0), 0)
        run_len = tl.sum(tl.where(mine, padded, 0), 0)
        count = tl.sum(tl.where(mine, counts, 0), 0)
        if expert == 0:
            tl.store(rows_used, tl.sum(padded, 0))
        if count > 0:
            placed = 0
            for start in range(0, pairs, CHUNK):
                offs = start + tl.arange(0, CHUNK)
                hit = tl.load(chosen + offs, mask=offs < pairs, other=-1).to(tl.int32) == expert
                rank = placed + tl.cumsum(hit.to(tl.int32), 0) - 1
                tl.store(sorted_ids + run_start + rank, offs, mask=hit)
                placed += tl.sum(hit.to(tl.int32), 0)
            pad = count + tl.arange(0, BLOCK_M)
            tl.store(sorted_ids + run_start + pad, pairs, mask=pad < run_len)
            first_block = run_start // BLOCK_M
            for b in range(first_block, first_block + run_len // BLOCK_M):
                tl.store(block_expert + b, expert)

    @triton.jit
    def _gate_up_kernel(x, w, h, sorted_ids, block_expert, rows_used, pairs, hidden, inter,
                        stride_x, stride_we, stride_wn, stride_h,
                        TOP_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr, IEEE: tl.constexpr):
        n_tiles = tl.cdiv(inter, BLOCK_N)
        work = tl.load(rows_used) // BLOCK_M * n_tiles
        # persistent: the grid is sized for the GPU, not for the worst routing, so no program
        # starts only to find its block unused; a block's tiles run side by side (x stays in L2)
        for item in range(tl.program_id(0), work, tl.num_programs(0)):
            block, tile = item // n_tiles, item % n_tiles
            rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
            pair = tl.load(sorted_ids + rows)
            real = pair < pairs
            token = (pair // TOP_K).to(tl.int64)
            expert = tl.load(block_expert + block).to(tl.int64)
            cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
            col_ok = cols < inter
            ks = tl.arange(0, BLOCK_K)
            x_ptrs = x + token[:, None] * stride_x + ks[None, :]
            g_ptrs = w + expert * stride_we + cols[None, :] * stride_wn + ks[:, None]  # [K, N]: W_gate^T
            u_ptrs = g_ptrs + inter * stride_wn
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

    @triton.jit
    def _down_kernel(h, w, pair_out, sorted_ids, block_expert, rows_used, pairs, hidden, inter,
                     stride_h, stride_we, stride_wn, stride_out,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     EVEN_K: tl.constexpr, IEEE: tl.constexpr):
        n_tiles = tl.cdiv(hidden, BLOCK_N)
        work = tl.load(rows_used) // BLOCK_M * n_tiles
        for item in range(tl.program_id(0), work, tl.num_programs(0)):  # persistent, as above
            block, tile = item // n_tiles, item % n_tiles
            rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
            pair = tl.load(sorted_ids + rows)
            real = pair < pairs
            expert = tl.load(block_expert + block).to(tl.int64)
            cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
            col_ok = cols < hidden
            ks = tl.arange(0, BLOCK_K)
            a_ptrs = h + rows.to(tl.int64)[:, None] * stride_h + ks[None, :]
            w_ptrs = w + expert * stride_we + cols[None, :] * stride_wn + ks[:, None]  # [K, N]: W_down^T
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

    @triton.jit
    def _combine_kernel(pair_out, weights, out, hidden, TOP_K: tl.constexpr, BLOCK: tl.constexpr):
        token = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        ok = cols < hidden
        acc = tl.zeros([BLOCK], tl.float32)
        for j in tl.static_range(TOP_K):
            weight = tl.load(weights + token * TOP_K + j)
            row = tl.load(pair_out + (token * TOP_K + j) * hidden + cols, mask=ok, other=0.0)
            acc += row.to(tl.float32) * weight
        tl.store(out + token * hidden + cols, acc.to(out.dtype.element_ty), mask=ok)


class Routing(NamedTuple):
    """The pairs sorted by expert, each expert's run padded to block_m rows (see `align`)."""

    sorted_ids: torch.Tensor  # [max_rows] int32: pair ids t * k + j; padding = N * k
    block_expert: torch.Tensor  # [max_rows // block_m] int32
    rows_used: torch.Tensor  # [1] int32; entries past it are left unwritten
    block_m: int
    pairs: int
    top_k: int


def align(chosen: torch.Tensor, experts: int, block_m: int) -> Routing:
    """Sort the (token, expert) pairs of chosen [N, k] by expert, on the device, no host sync."""
    pairs = chosen.numel()
    rows = max_rows(pairs, experts, block_m)
    sorted_ids = torch.empty(rows, dtype=torch.int32, device=chosen.device)
    block_expert = torch.empty(rows // block_m, dtype=torch.int32, device=chosen.device)
    rows_used = torch.empty(1, dtype=torch.int32, device=chosen.device)
    _align_kernel[(experts,)](chosen.contiguous().view(-1), sorted_ids, block_expert, rows_used, pairs,
                              EXPERTS_P2=triton.next_power_of_2(experts), BLOCK_M=block_m,
                              CHUNK=min(1024, triton.next_power_of_2(pairs)))
    return Routing(sorted_ids, block_expert, rows_used, block_m, pairs, chosen.shape[1])


@cache
def _multiprocessors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _programs(device: torch.device, most_work: int) -> int:
    """Programs of a persistent GEMM kernel: enough to fill every SM several times over (on
    the interpreter a few, so that each takes several work items)."""
    per_device = PROGRAMS_PER_SM * _multiprocessors(device) if device.type == "cuda" else 5
    return max(1, min(most_work, per_device))


def _fit(tile: Tile, reduced: int) -> Tile:
    """tile with its reduction step no wider than the reduced dimension (small test models)."""
    return Tile(tile.block_n, min(tile.block_k, max(16, triton.next_power_of_2(reduced))), tile.warps, tile.stages)


def gate_up_swiglu(x: torch.Tensor, gate_up: torch.Tensor, routing: Routing, tile: Tile) -> torch.Tensor:
    """silu(x W_gate^T) * x W_up^T of each sorted row's token under its expert: [max_rows, I]."""
    hidden, inter = x.shape[1], gate_up.shape[1] // 2
    h = torch.empty(routing.sorted_ids.numel(), inter, dtype=x.dtype, device=x.device)
    t = _fit(tile, hidden)
    _gate_up_kernel[(_programs(x.device, routing.block_expert.numel() * triton.cdiv(inter, t.block_n)),)](
        x, gate_up, h, routing.sorted_ids, routing.block_expert, routing.rows_used, routing.pairs, hidden, inter,
        x.stride(0), gate_up.stride(0), gate_up.stride(1), h.stride(0),
        TOP_K=routing.top_k, BLOCK_M=routing.block_m, BLOCK_N=t.block_n, BLOCK_K=t.block_k,
        EVEN_K=hidden % t.block_k == 0, IEEE=x.dtype == torch.float32, num_warps=t.warps, num_stages=t.stages)
    return h


def down_proj(h: torch.Tensor, down: torch.Tensor, routing: Routing, tile: Tile) -> torch.Tensor:
    """h W_down^T of each sorted row under its expert, stored at its pair's place: [N * k, H]."""
    hidden, inter = down.shape[1], down.shape[2]
    pair_out = torch.empty(routing.pairs, hidden, dtype=h.dtype, device=h.device)
    t = _fit(tile, inter)
    _down_kernel[(_programs(h.device, routing.block_expert.numel() * triton.cdiv(hidden, t.block_n)),)](
        h, down, pair_out, routing.sorted_ids, routing.block_expert, routing.rows_used, routing.pairs, hidden, inter,
        h.stride(0), down.stride(0), down.stride(1), pair_out.stride(0),
        BLOCK_M=routing.block_m, BLOCK_N=t.block_n, BLOCK_K=t.block_k,
        EVEN_K=inter % t.block_k == 0, IEEE=h.dtype == torch.float32, num_warps=t.warps, num_stages=t.stages)
    return pair_out


def combine(pair_out: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_j weights[:, j] * pair_out[t * k + j] in float32: [N, H] in pair_out's dtype."""
    n, top_k = weights.shape
    hidden = pair_out.shape[1]
    out = torch.empty(n, hidden, dtype=pair_out.dtype, device=pair_out.device)
    block = min(1024, triton.next_power_of_2(hidden))
    _combine_kernel[(n, triton.cdiv(hidden, block))](pair_out, weights.float().contiguous(), out, hidden,
                                                     TOP_K=top_k, BLOCK=block)
    return out


def fused_experts(x: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor, gate_up: torch.Tensor,
                  down: torch.Tensor, config: MoEConfig | None = None) -> torch.Tensor:
    """sum_j weights[:, j] * expert[chosen[:, j]](x) for x [N, H], experts stacked as gate_up
    [E, 2I, H] and down [E, H, I]: what `routed_experts` computes, in four launches."""
    if chosen.shape[0] == 0:
        return x.new_zeros(0, x.shape[1])
    experts = gate_up.shape[0]
    cfg = config or choose_config(chosen.numel(), experts, x.dtype)
    x = x if x.stride(-1) == 1 else x.contiguous()
    routing = align(chosen, experts, cfg.block_m)
    h = gate_up_swiglu(x, gate_up.contiguous(), routing, cfg.gate_up)  # parameters: contiguous already
    return combine(down_proj(h, down.contiguous(), routing, cfg.down), weights)
