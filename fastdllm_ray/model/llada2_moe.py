"""LLaDA2.0's mixture-of-experts layer: a grouped sigmoid router, routed SwiGLU experts run as
grouped GEMMs over the tokens each expert got, and a shared expert every token goes through.

Router (its arithmetic is part of the model; the reference hard-codes it whatever config.json
says): logits x . W^T in float32, scores s = sigmoid. Selection uses s + expert_bias: the
experts form `n_group` groups of consecutive ids, a group scores the sum of its two best
biased scores, the `topk_group` best groups stay, and the `num_experts_per_tok` best biased
scores inside them are chosen (in that order). Their weights are the unbiased s, divided by
their sum (+ 1e-20, as the reference), times `routed_scaling_factor`.

With FASTDLLM_MOE_BACKEND=auto (CUDA, Triton importable) or =triton, the router runs as two
kernels (model/moe_router_triton.py) and the experts as fused kernels (model/moe_triton.py) that
read each touched expert's weights once, SwiGLU, the weighted top-k sum and the shared expert
fused in. By default (grouped_mm, and wherever Triton cannot run): every (token, chosen expert) pair is sorted by
expert; one grouped matmul computes [gate; up] for all pairs, a second one `down`
(torch._grouped_mm where it runs: CUDA bf16 on Hopper, and the CPU; else `padded_grouped_mm`,
a batched matmul over experts padded to the busiest one). No Python loop over experts and no
host sync on the GPU paths, so a CUDA graph of a whole forward holds. Outputs are put back in
token order and summed with their weights in float32, as the reference's moe_infer does.

The checkpoint stores each expert's gate/up/down separately
(`mlp.experts.E.{gate,up,down}_proj.weight`); we keep them stacked ([E, 2I, H] and [E, H, I]),
gathered when a state dict is loaded and handed out as views of the stacks when one is asked
for, so saving and loading use the checkpoint's own names.
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from fastdllm_ray.model import moe_router_triton, moe_triton
from fastdllm_ray.model.llada2_config import LLaDA2Config

MOE_BACKENDS = ("auto", "triton", "grouped_mm")
# auto: the Triton router and experts on CUDA where Triton imports, else the torch router and
# grouped GEMMs; triton: always the kernels (on the CPU only under TRITON_INTERPRET=1: tests);
# grouped_mm: never. Read once; benchmarks may set the attribute. The default stays grouped_mm,
# the path measured on an H100 (BENCHMARKS.md, block-diffusion): the Triton kernels are checked
# under the interpreter and compiled for sm_90 here, but not yet run on a GPU.
MOE_BACKEND = os.environ.get("FASTDLLM_MOE_BACKEND", "grouped_mm")
if MOE_BACKEND not in MOE_BACKENDS:
    raise ValueError(f"FASTDLLM_MOE_BACKEND must be one of {', '.join(MOE_BACKENDS)}, not {MOE_BACKEND!r}")


def route(x: torch.Tensor, weight: torch.Tensor, expert_bias: torch.Tensor, n_group: int, topk_group: int,
          top_k: int, scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen experts [N, k] (best biased score first) and their float32 weights [N, k] for x [N, H]."""
    scores = torch.sigmoid(F.linear(x.float(), weight.float()))
    biased = scores + expert_bias.float()
    n, experts = biased.shape
    grouped = biased.view(n, n_group, experts // n_group)
    group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)
    kept_groups = group_scores.topk(topk_group, dim=-1, sorted=False).indices
    group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, kept_groups, True)
    candidates = grouped.masked_fill(~group_mask[..., None], float("-inf")).view(n, experts)
    chosen = candidates.topk(top_k, dim=-1).indices
    weights = scores.gather(1, chosen)
    if top_k > 1:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return chosen, weights * scaling


@lru_cache(maxsize=None)
def grouped_mm_usable(device: torch.device, dtype: torch.dtype) -> bool:
    """torch._grouped_mm runs on the CPU and, on CUDA, for bf16 on Hopper or newer."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    if device.type == "cpu":
        return True
    return device.type == "cuda" and dtype == torch.bfloat16 and torch.cuda.get_device_capability(device) >= (9, 0)


def padded_grouped_mm(a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor,
                      max_rows: int | None = None) -> torch.Tensor:
    """a [M, K] rows sorted by group, b [G, K, N], offsets [G] (each group's end row): [M, N],
    group g's rows times b[g]. The fallback of torch._grouped_mm: one batched matmul over the
    groups padded to the largest (reads every group's matrix; one host read of the largest
    count, or, while a CUDA graph is captured, padding to `max_rows`, at most M)."""
    m, groups = a.shape[0], b.shape[0]
    offsets = offsets.long()
    counts = torch.diff(offsets, prepend=offsets.new_zeros(1))
    rows = torch.arange(m, device=a.device)
    group = torch.searchsorted(offsets, rows, right=True)
    rank = rows - (offsets - counts)[group]
    capturing = a.is_cuda and torch.cuda.is_current_stream_capturing()
    width = min(m, max_rows or m) if capturing or not m else int(counts.max())
    padded = a.new_zeros(groups, width, a.shape[1])
    padded[group, rank] = a
    return torch.bmm(padded, b)[group, rank]


def grouped_mm(a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor, max_rows: int | None = None) -> torch.Tensor:
    """padded_grouped_mm's result, by torch._grouped_mm where it runs."""
    if grouped_mm_usable(a.device, a.dtype):
        return torch._grouped_mm(a, b, offs=offsets)
    return padded_grouped_mm(a, b, offsets, max_rows)


def uses_triton(x: torch.Tensor) -> bool:
    """Whether `routed_experts` runs the fused Triton kernels for x (see MOE_BACKEND)."""
    if MOE_BACKEND == "grouped_mm":
        return False
    usable = moe_triton.available(x.device, x.dtype)
    if MOE_BACKEND == "triton":
        if not usable:
            raise RuntimeError(f"FASTDLLM_MOE_BACKEND=triton, but the Triton kernels cannot run on {x.device} "
                               f"for {x.dtype} (Triton missing, or the CPU without TRITON_INTERPRET=1)")
        return True
    return usable and x.is_cuda


def routed_experts(x: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor, gate_up: torch.Tensor,
                   down: torch.Tensor, mm=None) -> torch.Tensor:
    """sum_j weights[:, j] * expert[chosen[:, j]](x) for x [N, H], experts stacked as gate_up
    [E, 2I, H] and down [E, H, I]: the fused Triton kernels where `uses_triton`, else (or when
    `mm` names a grouped matmul) `grouped_experts`."""
    if mm is None and uses_triton(x):
        return moe_triton.fused_experts(x, chosen, weights, gate_up, down)
    return grouped_experts(x, chosen, weights, gate_up, down, mm or grouped_mm)


def grouped_experts(x: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor, gate_up: torch.Tensor,
                    down: torch.Tensor, mm=grouped_mm) -> torch.Tensor:
    """routed_experts as two grouped matmuls over the pairs sorted by expert."""
    n, k = chosen.shape
    experts, inter = gate_up.shape[0], down.shape[2]
    flat = chosen.reshape(-1)
    order = flat.argsort(stable=True)  # pairs grouped by expert
    counts = torch.zeros(experts, dtype=torch.int32, device=x.device)
    counts.scatter_add_(0, flat, torch.ones_like(flat, dtype=torch.int32))
    offsets = counts.cumsum(0, dtype=torch.int32)
    # an expert gets each token at most once: n rows at most
    gate_and_up = mm(x[order // k], gate_up.transpose(1, 2), offsets, n)
    hidden = F.silu(gate_and_up[:, :inter]) * gate_and_up[:, inter:]
    out = mm(hidden, down.transpose(1, 2), offsets, n)
    in_token_order = torch.empty_like(out).index_copy_(0, order, out)
    return (in_token_order.view(n, k, -1).float() * weights[..., None]).sum(dim=1).to(x.dtype)


class Router(nn.Module):
    def __init__(self, cfg: LLaDA2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.num_experts, cfg.d_model))
        self.register_buffer("expert_bias", torch.zeros(cfg.num_experts))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg
        fn = route
        if moe_router_triton.fits(c.num_experts, c.n_group) and uses_triton(x):
            fn = moe_router_triton.route
        return fn(x, self.weight, self.expert_bias, c.n_group, c.topk_group, c.num_experts_per_tok,
                  c.routed_scaling_factor)


class GroupedExperts(nn.Module):
    """The routed experts' weights, stacked; state dicts use the checkpoint's per-expert names."""

    def __init__(self, cfg: LLaDA2Config) -> None:
        super().__init__()
        experts, inter, d = cfg.num_experts, cfg.moe_intermediate_size, cfg.d_model
        self.gate_up = nn.Parameter(torch.empty(experts, 2 * inter, d))
        self.down = nn.Parameter(torch.empty(experts, d, inter))
        self.register_state_dict_post_hook(_per_expert_names)
        self.register_load_state_dict_pre_hook(_stack_experts)


def _per_expert_names(module: GroupedExperts, state: dict, prefix: str, _metadata) -> None:
    gate_up, down = state.pop(prefix + "gate_up"), state.pop(prefix + "down")
    inter = down.shape[2]
    for e in range(gate_up.shape[0]):
        state[f"{prefix}{e}.gate_proj.weight"] = gate_up[e, :inter]
        state[f"{prefix}{e}.up_proj.weight"] = gate_up[e, inter:]
        state[f"{prefix}{e}.down_proj.weight"] = down[e]


def _stack_experts(module: GroupedExperts, state: dict, prefix: str, *_args) -> None:
    experts = module.gate_up.shape[0]
    names = [f"{prefix}{e}.{p}_proj.weight" for e in range(experts) for p in ("gate", "up", "down")]
    if not all(name in state for name in names):
        return  # load_state_dict names what is missing
    per_expert = [[state.pop(f"{prefix}{e}.{p}_proj.weight") for p in ("gate", "up", "down")]
                  for e in range(experts)]
    state[prefix + "gate_up"] = torch.stack([torch.cat([gate, up]) for gate, up, _ in per_expert])
    state[prefix + "down"] = torch.stack([down for _, _, down in per_expert])


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)): the dense layers' MLP and the shared expert."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden, bias=False)
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoELayer(nn.Module):
    """Parameter names as the checkpoint's `model.layers.N.mlp.*`: gate (the router), experts,
    shared_experts."""

    def __init__(self, cfg: LLaDA2Config) -> None:
        super().__init__()
        self.gate = Router(cfg)
        self.experts = GroupedExperts(cfg)
        if cfg.num_shared_experts:
            self.shared_experts = SwiGLU(cfg.d_model, cfg.moe_intermediate_size * cfg.num_shared_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        chosen, weights = self.gate(flat)
        gate_up, down = self.experts.gate_up, self.experts.down
        shared = self.shared_weights()
        if shared is not None and uses_triton(flat) and moe_triton.shared_fits(shared, gate_up, down):
            # the shared expert as one more expert of the fused kernels: no launches of its own
            return moe_triton.fused_experts(flat, chosen, weights, gate_up, down, shared=shared).view(shape)
        out = routed_experts(flat, chosen, weights, gate_up, down)
        if shared is not None:
            out = out + self.shared_experts(flat)
        return out.view(shape)

    def shared_weights(self) -> moe_triton.SharedExpert | None:
        if not hasattr(self, "shared_experts"):
            return None
        s = self.shared_experts
        return moe_triton.SharedExpert(s.gate_proj.weight, s.up_proj.weight, s.down_proj.weight)
