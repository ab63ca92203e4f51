"""LLaDA2.0's router (llada2_moe.route) as two Triton kernels instead of some twenty small ones.

In a decode-sized step the router's work is tiny (32 tokens x 256 experts), but as torch ops
it is a float32 cast of x and of the weight, a GEMM, then sigmoid, bias, two top-k's, a
scatter, a mask, a gather and the normalisation: about twenty launches a layer, each a few
microseconds even inside a CUDA graph, for 19 layers a step. Here:

1. `_scores_kernel`: sigmoid(x . W^T) in float32 (operands widened to float32, IEEE float32
   dots: route's F.linear(x.float(), W.float()) up to summation order, as cuBLAS's own
   order differs between batch sizes), tiled over tokens and experts so that many programs
   share the weight read.
2. `_select_kernel`, one program a token: the biased scores, each group's two best summed,
   the `topk_group` best groups, the `top_k` best experts inside them (best first; of equal
   scores the lower id), their unbiased scores divided by their sum (+ 1e-20, IEEE division)
   times the scaling factor.

Used where `fits` (experts and groups in powers of two, as LLaDA2.0's 256 in 8 groups);
elsewhere the torch router runs.
"""

from __future__ import annotations

import torch

from fastdllm_ray.model.moe_triton import triton

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _scores_kernel(x, w, scores, tokens, experts, hidden, stride_x, stride_w,
                       BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
        cols = tl.program_id(1) * BLOCK_E + tl.arange(0, BLOCK_E)
        ks = tl.arange(0, BLOCK_K)
        row_ok, col_ok = rows < tokens, cols < experts
        x_ptrs = x + rows.to(tl.int64)[:, None] * stride_x + ks[None, :]
        w_ptrs = w + cols.to(tl.int64)[None, :] * stride_w + ks[:, None]  # [K, E]: W^T
        acc = tl.zeros([BLOCK_T, BLOCK_E], tl.float32)
        for k in range(0, hidden, BLOCK_K):
            k_ok = k + ks < hidden
            a = tl.load(x_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0).to(tl.float32)
            b = tl.load(w_ptrs, mask=col_ok[None, :] & k_ok[:, None], other=0.0).to(tl.float32)
            acc = tl.dot(a, b, acc, input_precision="ieee")
            x_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        score = 1.0 / (1.0 + tl.exp(-acc))
        out = scores + rows.to(tl.int64)[:, None] * experts + cols[None, :]
        tl.store(out, score, mask=row_ok[:, None] & col_ok[None, :])

    @triton.jit
    def _select_kernel(scores, bias, chosen, weights, scaling,
                       EXPERTS: tl.constexpr, GROUPS: tl.constexpr, TOPK_GROUP: tl.constexpr,
                       TOP_K: tl.constexpr, TOP_K_P2: tl.constexpr):
        token = tl.program_id(0).to(tl.int64)
        PER_GROUP: tl.constexpr = EXPERTS // GROUPS
        ids = tl.arange(0, EXPERTS)
        score = tl.load(scores + token * EXPERTS + ids)
        biased = tl.reshape(score + tl.load(bias + ids).to(tl.float32), [GROUPS, PER_GROUP])
        in_group = tl.arange(0, PER_GROUP)
        best = tl.argmax(biased, axis=1, tie_break_left=True)
        second = tl.max(tl.where(in_group[None, :] == best[:, None], float("-inf"), biased), axis=1)
        group_score = tl.max(biased, axis=1) + second
        group_ids = tl.arange(0, GROUPS)
        kept = group_ids < 0
        for _ in tl.static_range(TOPK_GROUP):
            g = tl.argmax(group_score, axis=0, tie_break_left=True)
            kept = kept | (group_ids == g)
            group_score = tl.where(group_ids == g, float("-inf"), group_score)
        candidates = tl.reshape(tl.where(kept[:, None], biased, float("-inf")), [EXPERTS])
        slots = tl.arange(0, TOP_K_P2)
        picked = tl.zeros([TOP_K_P2], tl.int32)
        picked_score = tl.zeros([TOP_K_P2], tl.float32)
        for j in tl.static_range(TOP_K):
            e = tl.argmax(candidates, axis=0, tie_break_left=True)
            picked = tl.where(slots == j, e, picked)
            picked_score = tl.where(slots == j, tl.sum(tl.where(ids == e, score, 0.0), axis=0), picked_score)
            candidates = tl.where(ids == e, float("-inf"), candidates)
        if TOP_K > 1:
            picked_score = tl.math.div_rn(picked_score, tl.sum(picked_score, axis=0) + 1e-20)
        tl.store(chosen + token * TOP_K + slots, picked.to(tl.int64), mask=slots < TOP_K)
        tl.store(weights + token * TOP_K + slots, picked_score * scaling, mask=slots < TOP_K)


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def fits(experts: int, n_group: int) -> bool:
    """The select kernel holds a token's scores as [groups, experts per group]: powers of two."""
    return triton is not None and _power_of_two(experts) and _power_of_two(n_group) and experts // n_group >= 2


def route(x: torch.Tensor, weight: torch.Tensor, expert_bias: torch.Tensor, n_group: int, topk_group: int,
          top_k: int, scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """llada2_moe.route's result (chosen [N, k] int64, best first; weights [N, k] float32) in two launches."""
    tokens, hidden = x.shape
    experts = weight.shape[0]
    chosen = torch.empty(tokens, top_k, dtype=torch.int64, device=x.device)
    weights = torch.empty(tokens, top_k, dtype=torch.float32, device=x.device)
    if tokens == 0:
        return chosen, weights
    x = x if x.stride(-1) == 1 else x.contiguous()
    weight = weight.contiguous()
    scores = torch.empty(tokens, experts, dtype=torch.float32, device=x.device)
    block_t, block_e = 16, 16  # small tiles: at 32 tokens, 32 programs share the float32 dots
    _scores_kernel[(triton.cdiv(tokens, block_t), triton.cdiv(experts, block_e))](
        x, weight, scores, tokens, experts, hidden, x.stride(0), weight.stride(0),
        BLOCK_T=block_t, BLOCK_E=block_e, BLOCK_K=min(64, triton.next_power_of_2(hidden)), num_warps=4)
    _select_kernel[(tokens,)](scores, expert_bias.contiguous(), chosen, weights, float(scaling),
                              EXPERTS=experts, GROUPS=n_group, TOPK_GROUP=topk_group, TOP_K=top_k,
                              TOP_K_P2=triton.next_power_of_2(top_k), num_warps=1)
    return chosen, weights
