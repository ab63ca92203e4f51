"""The fused Triton MoE kernels (model/moe_triton.py) compute what a loop over the experts
computes, for any routing a token count allows, reading no buffer entry they did not write;
the Triton router (model/moe_router_triton.py) chooses what the torch router chooses; and
LLaDA2.0 run on both still matches its reference logits and chosen experts.

Where there is no GPU the kernels run under Triton's interpreter, in one subprocess (the
interpreter must be chosen before Triton is imported, and this process has imported it):
`python this_file OUT` computes every case there and the tests here check its results. Three
gaps of Triton 3.6's interpreter against the GPU are closed for that run (`_interpreter_as_gpu`).
With CUDA the same cases run compiled here, and CUDA graph replays are checked too. Skipped
where Triton is not installed (it is not a project dependency).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fastdllm_ray.model import llada2_moe, moe_router_triton, moe_triton
from fastdllm_ray.model.llada2_moe import route, uses_triton

pytestmark = pytest.mark.skipif(moe_triton.triton is None, reason="Triton is not installed")

REFDATA = Path(__file__).parents[1] / "fixtures" / "refdata-llada2"
EXPERTS, TOP_K = 16, 4
SHAPES = {"even": (128, 64), "ragged": (96, 40)}  # hidden, inter: ragged ones need the K and N masks
CONFIGS = {"small": moe_triton.SMALL, "medium": moe_triton.MEDIUM, "large": moe_triton.LARGE}
# name -> (tokens, dtype, shape, routing, config or None for the one chosen by size)
CASES = {f"{tokens}-tokens-{dtype}": (tokens, dtype, "even", "random", None)
         for tokens in (1, 7, 32, 100) for dtype in ("float32", "bfloat16")}
CASES.update({f"{tokens}-tokens-{dtype}-ragged": (tokens, dtype, "ragged", "random", None)
              for tokens in (7, 100) for dtype in ("float32", "bfloat16")})
# the extremes a fixed token count allows: every pair on the same k experts, or on as many as can be
CASES.update({f"{tokens}-tokens-{routing}": (tokens, "bfloat16", "even", routing, None)
              for tokens in (3, 32, 100) for routing in ("same", "spread")})
CASES.update({f"100-tokens-{name}-blocks": (100, "bfloat16", "ragged", "random", name) for name in CONFIGS})
CASES["300-tokens-bfloat16"] = (300, "bfloat16", "even", "random", None)  # align reads 1200 pairs in two chunks


# name -> (tokens, experts, n_group, topk_group, top_k, dtype): the tiny checkpoint's router, then LLaDA2.0-mini's
ROUTER_CASES = {f"{tokens}-tokens-{experts}-experts-{dtype}": (tokens, experts, groups, kept, k, dtype)
                for tokens in (1, 7, 32, 100) for experts, groups, kept, k in ((16, 4, 2, 4), (256, 8, 4, 8))
                for dtype in ("float32", "bfloat16")}


def make_router_case(tokens: int, experts: int, dtype: str, hidden: int = 96) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(tokens + experts)
    dt = getattr(torch, dtype)
    return {"x": torch.randn(tokens, hidden, generator=gen).to(dt),
            "weight": (torch.randn(experts, hidden, generator=gen) * hidden ** -0.5).to(dt),
            "expert_bias": (torch.randn(experts, generator=gen) * 0.1).to(dt)}


def make_case(tokens: int, dtype: str, shape: str, routing: str, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed + tokens)
    hidden, inter = SHAPES[shape]
    dt = getattr(torch, dtype)
    if routing == "same":
        chosen = torch.arange(TOP_K).repeat(tokens, 1)
    elif routing == "spread":
        chosen = (torch.arange(tokens * TOP_K) % EXPERTS).view(tokens, TOP_K)
    else:
        chosen = torch.stack([torch.randperm(EXPERTS, generator=gen)[:TOP_K] for _ in range(tokens)])
        chosen[::3, 0] = 5  # one busy expert, several idle ones
    return {
        "x": torch.randn(tokens, hidden, generator=gen).to(dt),
        "chosen": chosen,
        "weights": torch.rand(tokens, TOP_K, generator=gen),
        "gate_up": (torch.randn(EXPERTS, 2 * inter, hidden, generator=gen) * hidden ** -0.5).to(dt),
        "down": (torch.randn(EXPERTS, hidden, inter, generator=gen) * inter ** -0.5).to(dt),
    }


def expert_loop(x, chosen, weights, gate_up, down) -> torch.Tensor:
    """The reference's moe_infer: each expert over its tokens, in x's dtype; the weighted
    top-k sum in float32."""
    inter = down.shape[2]
    out = x.new_zeros(*chosen.shape, x.shape[1])
    for e in chosen.unique().tolist():
        token, slot = (chosen == e).nonzero(as_tuple=True)
        h = F.linear(x[token], gate_up[e])
        out[token, slot] = F.linear(F.silu(h[:, :inter]) * h[:, inter:], down[e])
    return (out.float() * weights[..., None]).sum(dim=1).to(x.dtype)


def run_cases(device: str) -> dict[str, dict[str, torch.Tensor]]:
    """Every case through fused_experts and align on `device`, results on the CPU."""
    results = {}
    for name, (tokens, dtype, shape, routing, config) in CASES.items():
        case = {k: v.to(device) for k, v in make_case(tokens, dtype, shape, routing).items()}
        cfg = CONFIGS[config] if config else moe_triton.choose_config(tokens * TOP_K, EXPERTS, case["x"].dtype)
        out = moe_triton.fused_experts(**case, config=cfg)
        routing = moe_triton.align(case["chosen"], EXPERTS, cfg.block_m)
        results[name] = {"out": out, "sorted_ids": routing.sorted_ids, "block_expert": routing.block_expert,
                         "rows_used": routing.rows_used, "block_m": torch.tensor(cfg.block_m)}
    for name, (tokens, experts, groups, kept, k, dtype) in ROUTER_CASES.items():
        case = {key: v.to(device) for key, v in make_router_case(tokens, experts, dtype).items()}
        chosen, weights = moe_router_triton.route(**case, n_group=groups, topk_group=kept, top_k=k, scaling=2.5)
        results[name] = {"chosen": chosen, "weights": weights}
    return {name: {k: v.cpu() for k, v in r.items()} for name, r in results.items()}


def llada2_forward() -> dict[str, torch.Tensor]:
    """The refdata-llada2 checkpoint's logits check through whichever MoE path is set: the
    checked logits and each MoE layer's chosen experts and weights."""
    from safetensors.torch import load_file

    from fastdllm_ray.model import load_model
    from fastdllm_ray.model.llada2_moe import MoELayer

    model = load_model(REFDATA / "checkpoint")
    vectors = load_file(str(REFDATA / "logits_check.safetensors"))
    out = {}
    for i, block in enumerate(model.blocks):
        if isinstance(block.mlp, MoELayer):
            block.mlp.gate.register_forward_hook(
                lambda _m, _i, routed, i=i: out.update({f"chosen{i}": routed[0], f"weights{i}": routed[1]}))
    with torch.inference_mode():
        out["logits"] = model(vectors["input_ids"][None], causal_block=32)[0][vectors["positions"]]
    return out


def _interpreter_as_gpu() -> None:
    """Make Triton 3.6's interpreter compute what the GPU computes for these kernels: it holds
    bf16 as uint16 bit patterns, so (1) tl.dot multiplied the bit patterns (the GPU multiplies
    bf16 values, exactly, accumulating in float32) and (2) float32 -> bf16 casts truncated (the
    GPU rounds to nearest even); (3) a scalar argument is a one-element array, which numpy >= 2.4
    refuses to turn into the int a loop bound needs."""
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter as ti

    def as_float32(t):
        if t.dtype == tl.bfloat16:
            bits = torch.from_numpy(np.ascontiguousarray(t.data).view(np.int16))
            return ti.TensorHandle(bits.view(torch.bfloat16).float().numpy(), tl.float32)
        return t

    dot, cast, patch_tensor = ti.InterpreterBuilder.create_dot, ti.InterpreterBuilder.cast_impl, ti._patch_lang_tensor
    ti.InterpreterBuilder.create_dot = lambda self, a, b, d, *rest: dot(self, as_float32(a), as_float32(b), d, *rest)

    def cast_impl(self, src, dst_type):
        if src.dtype == tl.float32 and dst_type.scalar == tl.bfloat16:
            rounded = torch.from_numpy(np.ascontiguousarray(src.data)).to(torch.bfloat16)
            return ti.TensorHandle(rounded.view(torch.int16).numpy().view(np.uint16), tl.bfloat16)
        return cast(self, src, dst_type)

    def patch_lang_tensor(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    ti.InterpreterBuilder.cast_impl = cast_impl
    ti._patch_lang_tensor = patch_lang_tensor


def _poison_new_buffers() -> None:
    """Every torch.empty from here on holds NaN or 0 (a real pair id, expert 0): what a CUDA
    graph's memory holds from an earlier replay. A kernel that read an entry nobody wrote this
    call would change the result."""
    empty = torch.empty

    def poisoned(*args, **kwargs):
        t = empty(*args, **kwargs)
        return t.fill_(float("nan") if t.is_floating_point() else 0)

    torch.empty = poisoned


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    if torch.cuda.is_available():
        return {"cases": run_cases("cuda"), "llada2": None}
    out = tmp_path_factory.mktemp("moe") / "results.pt"
    env = {**os.environ, "TRITON_INTERPRET": "1", "FASTDLLM_MOE_BACKEND": "triton"}
    subprocess.run([sys.executable, __file__, str(out)], env=env, check=True, timeout=900)
    return torch.load(out)


@pytest.mark.parametrize("name", list(CASES))
def test_fused_experts_match_the_per_expert_loop(results, name):
    tokens, dtype, shape, routing, _ = CASES[name]
    case = make_case(tokens, dtype, shape, routing)
    out = results["cases"][name]["out"]
    exact = expert_loop(**{k: v.float() if v.is_floating_point() else v for k, v in case.items()})
    assert out.shape == exact.shape and out.dtype == case["x"].dtype
    scale = exact.abs().max()
    if dtype == "float32":
        assert (out - exact).abs().max() <= 1e-5 * scale
    else:  # as close to the float32 loop as the bf16 loop is, give or take accumulation order
        loop_err = (expert_loop(**case).float() - exact).abs().max()
        assert (out.float() - exact).abs().max() <= 1.5 * loop_err + 1e-3 * scale


@pytest.mark.parametrize("name", list(CASES))
def test_align_puts_every_pair_once_in_its_experts_padded_run(results, name):
    tokens, dtype, shape, routing, _ = CASES[name]
    chosen = make_case(tokens, dtype, shape, routing)["chosen"].reshape(-1)
    r = results["cases"][name]
    block_m, pairs, used = int(r["block_m"]), chosen.numel(), int(r["rows_used"])
    counts = torch.bincount(chosen, minlength=EXPERTS)
    assert used == int(((counts + block_m - 1) // block_m * block_m).sum())
    assert used <= r["sorted_ids"].numel() == moe_triton.max_rows(pairs, EXPERTS, block_m)
    ids = r["sorted_ids"][:used].long()
    real = ids < pairs
    assert (ids[~real] == pairs).all()  # padding is the sentinel
    assert ids[real].sort().values.tolist() == list(range(pairs))  # each pair exactly once
    row_expert = r["block_expert"][: used // block_m].long().repeat_interleave(block_m)
    assert torch.equal(row_expert[real], chosen[ids[real]])  # in a block of its own expert
    assert (row_expert.diff() >= 0).all()  # runs in expert order, token order inside one
    for e in chosen.unique().tolist():
        assert (ids[real][row_expert[real] == e].diff() > 0).all()
    if name == "3-tokens-spread":  # 12 pairs on 12 experts: the worst case fills the buffer
        assert used == r["sorted_ids"].numel()


@pytest.mark.parametrize("name", list(ROUTER_CASES))
def test_triton_router_chooses_the_torch_routers_experts_in_order(results, name):
    tokens, experts, groups, kept, k, dtype = ROUTER_CASES[name]
    case = make_router_case(tokens, experts, dtype)
    chosen, weights = route(**case, n_group=groups, topk_group=kept, top_k=k, scaling=2.5)
    got = results["cases"][name]
    assert torch.equal(got["chosen"], chosen)
    assert torch.allclose(got["weights"], weights, atol=1e-6, rtol=0)


def test_router_kernels_take_powers_of_two_groups_only():
    assert moe_router_triton.fits(256, 8) and moe_router_triton.fits(16, 4)
    assert not moe_router_triton.fits(96, 4)  # 96 experts: the torch router runs
    assert not moe_router_triton.fits(16, 16)  # a group must hold two


@pytest.mark.skipif(moe_triton.interpreting() or torch.cuda.is_available(), reason="the plain CPU's choice")
def test_on_the_cpu_the_switch_keeps_grouped_gemms_and_refuses_forced_kernels(monkeypatch):
    x = torch.randn(3, 8)
    for backend in ("auto", "grouped_mm"):
        monkeypatch.setattr(llada2_moe, "MOE_BACKEND", backend)
        assert not uses_triton(x)
    monkeypatch.setattr(llada2_moe, "MOE_BACKEND", "triton")
    with pytest.raises(RuntimeError, match="FASTDLLM_MOE_BACKEND=triton"):
        uses_triton(x)


def test_llada2_on_the_kernels_matches_the_reference_logits_and_experts(results):
    if results["llada2"] is None:
        pytest.skip("checked on the CPU interpreter run (CUDA runs check graphs instead)")
    import json

    from safetensors.torch import load_file

    vectors = load_file(str(REFDATA / "logits_check.safetensors"))
    check = json.loads((REFDATA / "reference.json").read_text())["logits_check"]
    got = results["llada2"]
    assert torch.allclose(got["logits"], vectors["logits"], atol=1e-4, rtol=0)
    for layer in ("1", "2"):
        assert got[f"chosen{layer}"].tolist() == check["experts"][layer]
        assert torch.allclose(got[f"weights{layer}"], torch.tensor(check["expert_weights"][layer]), atol=1e-6, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the device tool)")
def test_a_cuda_graph_of_the_kernels_follows_each_replays_routing():
    case = {k: v.cuda() for k, v in make_case(32, "bfloat16", "even", "random").items()}
    routings = [make_case(32, "bfloat16", "even", r)["chosen"].cuda() for r in ("same", "spread", "random")]
    moe_triton.fused_experts(**case)  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = moe_triton.fused_experts(**case)
    for chosen in routings:
        case["chosen"].copy_(chosen)
        graph.replay()
        assert torch.equal(out, moe_triton.fused_experts(**case))


if __name__ == "__main__":  # the interpreter run: python tests/model/test_moe_triton.py OUT
    _interpreter_as_gpu()
    llada2 = llada2_forward()  # before the poison: loading the checkpoint must not see it
    _poison_new_buffers()
    torch.save({"cases": run_cases("cpu"), "llada2": llada2}, sys.argv[1])
