"""LLaDA2.0's routed experts as fused Triton kernels: each touched expert's weights read once.

At a decode-sized step (32 tokens x 8 experts over 256) most touched experts get one to three
tokens, so the layer is a read of those experts' weights; torch._grouped_mm runs it at
1.8-2.3x that read (H100). Here, as in vLLM's and SGLang's fused MoE: the (token, expert) pairs are sorted
by expert and each expert's run padded to a multiple of BLOCK_M rows; a program owns one
block of rows (one expert) and one tile of output columns, so it streams that expert's weight
tile once for all its rows. Four launches, no host sync (a CUDA graph of the layer holds for
any routing; buffers are sized for the worst case of the token count):

1. `align_kernel` (one program per expert): counts the pairs of every expert, pads them to
   BLOCK_M, and writes its own pairs' ids (token order kept) into its run, padding slots as
   the sentinel `pairs`, its blocks' expert id, and (expert 0) the rows used.
2. `gate_up_kernel`: h = silu(x W_gate^T) * (x W_up^T) for a block's rows, two float32
   accumulators, SwiGLU in the epilogue.
3. `down_kernel`: h W_down^T, each row stored at its pair's place (token-major).
4. `combine_kernel`: out[t] = sum_j weights[t, j] * pair_out[t * k + j] in float32.

LLaDA2.0's shared expert (every token, the routed experts' shape) rides along as one more
expert: its pairs follow the routed ones, its weights stay where its SwiGLU keeps them, and
`combine_kernel` adds its row after rounding the routed sum, as the reference adds the two.
The kernels themselves are in model/moe_triton_kernels.py.

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

from fastdllm_ray.model import moe_triton_kernels as kernels

try:
    import triton
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


class SharedExpert(NamedTuple):
    """A shared expert's weights as its SwiGLU keeps them: gate and up [I, H], down [H, I]."""

    gate: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor


class Routing(NamedTuple):
    """The pairs sorted by expert, each expert's run padded to block_m rows (see `align`)."""

    sorted_ids: torch.Tensor  # [max_rows] int32: pair ids t * (k + shared) + j; padding = `pairs`
    block_expert: torch.Tensor  # [max_rows // block_m] int32; the shared expert is number `experts`
    rows_used: torch.Tensor  # [1] int32; entries past it are left unwritten
    block_m: int
    pairs: int  # N * (k + shared)
    top_k: int
    experts: int
    shared: bool


def align(chosen: torch.Tensor, experts: int, block_m: int, shared: bool = False) -> Routing:
    """Sort the (token, expert) pairs of chosen [N, k] (and, with `shared`, every token's pair
    with the shared expert, after all routed ones) by expert, on the device, no host sync."""
    tokens, top_k = chosen.shape
    pairs = tokens * (top_k + shared)
    rows = max_rows(pairs, experts + shared, block_m)
    sorted_ids = torch.empty(rows, dtype=torch.int32, device=chosen.device)
    block_expert = torch.empty(rows // block_m, dtype=torch.int32, device=chosen.device)
    rows_used = torch.empty(1, dtype=torch.int32, device=chosen.device)
    kernels.align_kernel[(experts + shared,)](
        chosen.contiguous().view(-1), sorted_ids, block_expert, rows_used, chosen.numel(), experts,
        TOP_K=top_k, SHARED=int(shared), EXPERTS_P2=triton.next_power_of_2(experts), BLOCK_M=block_m,
        CHUNK=min(1024, triton.next_power_of_2(max(tokens, chosen.numel()))))
    return Routing(sorted_ids, block_expert, rows_used, block_m, pairs, top_k, experts, shared)


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


def gate_up_swiglu(x: torch.Tensor, gate_up: torch.Tensor, routing: Routing, tile: Tile,
                   shared: SharedExpert | None = None) -> torch.Tensor:
    """silu(x W_gate^T) * x W_up^T of each sorted row's token under its expert: [max_rows, I]."""
    hidden, inter = x.shape[1], gate_up.shape[1] // 2
    h = torch.empty(routing.sorted_ids.numel(), inter, dtype=x.dtype, device=x.device)
    t = _fit(tile, hidden)
    gate, up = (shared.gate, shared.up) if routing.shared else (gate_up, gate_up)  # unread without one
    kernels.gate_up_kernel[(_programs(x.device, routing.block_expert.numel() * triton.cdiv(inter, t.block_n)),)](
        x, gate_up, gate, up, h, routing.sorted_ids, routing.block_expert, routing.rows_used, routing.pairs,
        routing.experts, hidden, inter, x.stride(0), gate_up.stride(0), gate_up.stride(1), h.stride(0),
        STRIDE=routing.top_k + routing.shared, SHARED=int(routing.shared), BLOCK_M=routing.block_m,
        BLOCK_N=t.block_n, BLOCK_K=t.block_k, EVEN_K=hidden % t.block_k == 0, IEEE=x.dtype == torch.float32,
        num_warps=t.warps, num_stages=t.stages)
    return h


def down_proj(h: torch.Tensor, down: torch.Tensor, routing: Routing, tile: Tile,
              shared: SharedExpert | None = None) -> torch.Tensor:
    """h W_down^T of each sorted row under its expert, stored at its pair's place: [pairs, H]."""
    hidden, inter = down.shape[1], down.shape[2]
    pair_out = torch.empty(routing.pairs, hidden, dtype=h.dtype, device=h.device)
    t = _fit(tile, inter)
    shared_down = shared.down if routing.shared else down
    kernels.down_kernel[(_programs(h.device, routing.block_expert.numel() * triton.cdiv(hidden, t.block_n)),)](
        h, down, shared_down, pair_out, routing.sorted_ids, routing.block_expert, routing.rows_used, routing.pairs,
        routing.experts, hidden, inter, h.stride(0), down.stride(0), down.stride(1), pair_out.stride(0),
        SHARED=int(routing.shared), BLOCK_M=routing.block_m, BLOCK_N=t.block_n, BLOCK_K=t.block_k,
        EVEN_K=inter % t.block_k == 0, IEEE=h.dtype == torch.float32, num_warps=t.warps, num_stages=t.stages)
    return pair_out


def combine(pair_out: torch.Tensor, weights: torch.Tensor, shared: bool = False) -> torch.Tensor:
    """sum_j weights[:, j] * pair_out[t, j] in float32 (then + the shared expert's row): [N, H]."""
    n, top_k = weights.shape
    hidden = pair_out.shape[1]
    out = torch.empty(n, hidden, dtype=pair_out.dtype, device=pair_out.device)
    block = min(1024, triton.next_power_of_2(hidden))
    kernels.combine_kernel[(n, triton.cdiv(hidden, block))](pair_out, weights.float().contiguous(), out, hidden,
                                                            TOP_K=top_k, SHARED=int(shared), BLOCK=block)
    return out


def shared_fits(shared: SharedExpert, gate_up: torch.Tensor, down: torch.Tensor) -> bool:
    """The kernels run a shared expert as one more expert: it must be one of their shape and layout."""
    _, two_inter, hidden = gate_up.shape
    return (shared.gate.shape == shared.up.shape == (two_inter // 2, hidden) and shared.down.shape == down.shape[1:]
            and all(w.dtype == gate_up.dtype and w.is_contiguous() for w in shared))


def fused_experts(x: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor, gate_up: torch.Tensor,
                  down: torch.Tensor, config: MoEConfig | None = None,
                  shared: SharedExpert | None = None) -> torch.Tensor:
    """sum_j weights[:, j] * expert[chosen[:, j]](x) (+ shared(x)) for x [N, H], experts stacked
    as gate_up [E, 2I, H] and down [E, H, I]: what `routed_experts` computes (and MoELayer with
    its shared expert, where `shared_fits`), in four launches."""
    if chosen.shape[0] == 0:
        return x.new_zeros(0, x.shape[1])
    experts = gate_up.shape[0]
    if shared is not None and not shared_fits(shared, gate_up, down):
        raise ValueError("fused_experts: the shared expert must have the routed experts' shape, dtype and layout")
    cfg = config or choose_config(chosen.numel(), experts, x.dtype)
    x = x if x.stride(-1) == 1 else x.contiguous()
    gate_up, down = gate_up.contiguous(), down.contiguous()  # parameters: already so
    routing = align(chosen, experts, cfg.block_m, shared is not None)
    h = gate_up_swiglu(x, gate_up, routing, cfg.gate_up, shared)
    return combine(down_proj(h, down, routing, cfg.down, shared), weights, shared is not None)
