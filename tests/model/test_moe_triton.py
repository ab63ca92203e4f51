"""The fused Triton MoE kernels (model/moe_triton.py) compute what a loop over the experts (and
the shared expert) computes, for any routing a token count allows, reading no buffer entry they
did not write; and LLaDA2.0 run on them (router included) still matches its reference logits
and chosen experts. Where there is no GPU the kernels run under Triton's interpreter in a
subprocess (tests/model/triton_interpreter.py); with CUDA they run compiled here, and CUDA
graph replays are checked too. Skipped where Triton is not installed (not a project dependency).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fastdllm_ray.model import moe_triton

pytestmark = pytest.mark.skipif(moe_triton.triton is None, reason="Triton is not installed")

REFDATA = Path(__file__).parents[1] / "fixtures" / "refdata-llada2"
EXPERTS, TOP_K = 16, 4
SHAPES = {"even": (128, 64), "ragged": (96, 40)}  # hidden, inter: ragged ones need the K and N masks
CONFIGS = {"small": moe_triton.SMALL, "medium": moe_triton.MEDIUM, "large": moe_triton.LARGE}
# name -> (tokens, dtype, shape, routing, config or None for the one chosen by size, shared expert)
CASES = {f"{tokens}-tokens-{dtype}": (tokens, dtype, "even", "random", None, False)
         for tokens in (1, 7, 32, 100) for dtype in ("float32", "bfloat16")}
CASES.update({f"{tokens}-tokens-{dtype}-ragged": (tokens, dtype, "ragged", "random", None, False)
              for tokens in (7, 100) for dtype in ("float32", "bfloat16")})
# the extremes a fixed token count allows: every pair on the same k experts, or on as many as can be
CASES.update({f"{tokens}-tokens-{routing}": (tokens, "bfloat16", "even", routing, None, False)
              for tokens in (3, 32, 100) for routing in ("same", "spread")})
CASES.update({f"100-tokens-{name}-blocks": (100, "bfloat16", "ragged", "random", name, False) for name in CONFIGS})
CASES["300-tokens-bfloat16"] = (300, "bfloat16", "even", "random", None, False)  # align reads 1200 pairs in 2 chunks
CASES.update({f"{tokens}-tokens-{dtype}-{shape}-shared": (tokens, dtype, shape, "random", None, True)
              for tokens in (1, 7, 32, 100) for dtype in ("float32", "bfloat16") for shape in SHAPES})
CASES.update({f"{tokens}-tokens-{routing}-shared": (tokens, "bfloat16", "even", routing, None, True)
              for tokens in (3, 33) for routing in ("same", "spread")})
CASES.update({f"100-tokens-{name}-blocks-shared": (100, "bfloat16", "ragged", "random", name, True)
              for name in CONFIGS})


def make_case(tokens: int, dtype: str, shape: str, routing: str, shared: bool) -> dict:
    gen = torch.Generator().manual_seed(tokens)
    hidden, inter = SHAPES[shape]
    dt = getattr(torch, dtype)
    if routing == "same":
        chosen = torch.arange(TOP_K).repeat(tokens, 1)
    elif routing == "spread":
        chosen = (torch.arange(tokens * TOP_K) % EXPERTS).view(tokens, TOP_K)
    else:
        chosen = torch.stack([torch.randperm(EXPERTS, generator=gen)[:TOP_K] for _ in range(tokens)])
        chosen[::3, 0] = 5  # one busy expert, several idle ones
    weight = lambda *size: (torch.randn(*size, generator=gen) * size[-1] ** -0.5).to(dt)  # noqa: E731
    case = {"x": torch.randn(tokens, hidden, generator=gen).to(dt), "chosen": chosen,
            "weights": torch.rand(tokens, TOP_K, generator=gen),
            "gate_up": weight(EXPERTS, 2 * inter, hidden), "down": weight(EXPERTS, hidden, inter)}
    if shared:
        case["shared"] = moe_triton.SharedExpert(weight(inter, hidden), weight(inter, hidden), weight(hidden, inter))
    return case


def on(case: dict, device: str, dtype: torch.dtype | None = None) -> dict:
    """case's tensors on device (floating ones in dtype, if given)."""
    def move(v):
        if isinstance(v, moe_triton.SharedExpert):
            return moe_triton.SharedExpert(*(move(w) for w in v))
        return v.to(device, dtype if dtype and v.is_floating_point() else v.dtype)
    return {k: move(v) for k, v in case.items()}


def expert_loop(x, chosen, weights, gate_up, down, shared=None) -> torch.Tensor:
    """The reference's moe_infer: each expert over its tokens, in x's dtype; the weighted top-k
    sum in float32, rounded; then + the shared expert's SwiGLU, as LLaDA2.0's MoE layer adds it."""
    inter = down.shape[2]
    out = x.new_zeros(*chosen.shape, x.shape[1])
    for e in chosen.unique().tolist():
        token, slot = (chosen == e).nonzero(as_tuple=True)
        h = F.linear(x[token], gate_up[e])
        out[token, slot] = F.linear(F.silu(h[:, :inter]) * h[:, inter:], down[e])
    routed = (out.float() * weights[..., None]).sum(dim=1).to(x.dtype)
    if shared is None:
        return routed
    return routed + F.linear(F.silu(F.linear(x, shared.gate)) * F.linear(x, shared.up), shared.down)


def run_cases(device: str) -> dict[str, dict[str, torch.Tensor]]:
    """Every case through fused_experts and align on `device`, results on the CPU."""
    results = {}
    for name, (tokens, dtype, shape, routing, config, shared) in CASES.items():
        case = on(make_case(tokens, dtype, shape, routing, shared), device)
        cfg = CONFIGS[config] if config else moe_triton.choose_config(tokens * TOP_K, EXPERTS, case["x"].dtype)
        out = moe_triton.fused_experts(**case, config=cfg)
        r = moe_triton.align(case["chosen"], EXPERTS, cfg.block_m, shared)
        results[name] = {"out": out.cpu(), "sorted_ids": r.sorted_ids.cpu(), "block_expert": r.block_expert.cpu(),
                         "rows_used": r.rows_used.cpu(), "block_m": torch.tensor(cfg.block_m)}
    return results


def llada2_forward(device: str) -> dict[str, torch.Tensor]:
    """The refdata-llada2 checkpoint's logits check (float32) through whichever MoE path runs on
    `device`: the checked logits and each MoE layer's chosen experts and weights, on the CPU."""
    from safetensors.torch import load_file

    from fastdllm_ray.model import load_model
    from fastdllm_ray.model.llada2_moe import MoELayer

    model = load_model(REFDATA / "checkpoint").to(device)
    vectors = {k: v.to(device) for k, v in load_file(str(REFDATA / "logits_check.safetensors")).items()}
    out = {}
    for i, block in enumerate(model.blocks):
        if isinstance(block.mlp, MoELayer):
            block.mlp.gate.register_forward_hook(
                lambda _m, _i, routed, i=i: out.update({f"chosen{i}": routed[0], f"weights{i}": routed[1]}))
    with torch.inference_mode():
        out["logits"] = model(vectors["input_ids"][None], causal_block=32)[0][vectors["positions"]]
    return {k: v.cpu() for k, v in out.items()}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    if torch.cuda.is_available():
        return {"cases": run_cases("cuda"), "llada2": llada2_forward("cuda")}
    from tests.model.triton_interpreter import results_of

    return results_of(__file__, tmp_path_factory.mktemp("moe") / "results.pt")


@pytest.mark.parametrize("name", list(CASES))
def test_fused_experts_match_the_per_expert_loop(results, name):
    tokens, dtype, shape, routing, _, shared = CASES[name]
    case = make_case(tokens, dtype, shape, routing, shared)
    out = results["cases"][name]["out"]
    exact = expert_loop(**on(case, "cpu", torch.float32))
    assert out.shape == exact.shape and out.dtype == case["x"].dtype
    scale = exact.abs().max()
    if dtype == "float32":
        assert (out - exact).abs().max() <= 1e-5 * scale
    else:  # as close to the float32 loop as the bf16 loop is, give or take accumulation order
        loop_err = (expert_loop(**case).float() - exact).abs().max()
        assert (out.float() - exact).abs().max() <= 1.5 * loop_err + 1e-3 * scale


@pytest.mark.parametrize("name", list(CASES))
def test_align_puts_every_pair_once_in_its_experts_padded_run(results, name):
    tokens, dtype, shape, routing, _, shared = CASES[name]
    chosen = make_case(tokens, dtype, shape, routing, shared)["chosen"]
    r = results["cases"][name]
    # pair t * (k + shared) + j: routed expert chosen[t, j], or (j = k) the shared one, numbered EXPERTS
    expert_of_pair = torch.cat([chosen, torch.full((tokens, int(shared)), EXPERTS)], dim=1).reshape(-1)
    block_m, pairs, used = int(r["block_m"]), expert_of_pair.numel(), int(r["rows_used"])
    counts = torch.bincount(expert_of_pair, minlength=EXPERTS + shared)
    assert used == int(((counts + block_m - 1) // block_m * block_m).sum())
    assert used <= r["sorted_ids"].numel() == moe_triton.max_rows(pairs, EXPERTS + shared, block_m)
    ids = r["sorted_ids"][:used].long()
    real = ids < pairs
    assert (ids[~real] == pairs).all()  # padding is the sentinel
    assert ids[real].sort().values.tolist() == list(range(pairs))  # each pair exactly once
    row_expert = r["block_expert"][: used // block_m].long().repeat_interleave(block_m)
    assert torch.equal(row_expert[real], expert_of_pair[ids[real]])  # in a block of its own expert
    assert (row_expert.diff() >= 0).all()  # runs in expert order (the shared one last), token order inside one
    for e in expert_of_pair.unique().tolist():
        assert (ids[real][row_expert[real] == e].diff() > 0).all()
    if name == "3-tokens-spread":  # 12 pairs on 12 experts: the worst case fills the buffer
        assert used == r["sorted_ids"].numel()


def test_llada2_on_the_kernels_matches_the_reference_logits_and_experts(results):
    from safetensors.torch import load_file

    vectors = load_file(str(REFDATA / "logits_check.safetensors"))
    check = json.loads((REFDATA / "reference.json").read_text())["logits_check"]
    got = results["llada2"]
    assert torch.allclose(got["logits"], vectors["logits"], atol=1e-4, rtol=0)
    for layer in ("1", "2"):
        assert got[f"chosen{layer}"].tolist() == check["experts"][layer]
        assert torch.allclose(got[f"weights{layer}"], torch.tensor(check["expert_weights"][layer]), atol=1e-6, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the device tool)")
@pytest.mark.parametrize("shared", [False, True])
def test_a_cuda_graph_of_the_kernels_follows_each_replays_routing(shared):
    case = on(make_case(32, "bfloat16", "even", "random", shared), "cuda")
    routings = [make_case(32, "bfloat16", "even", r, False)["chosen"].cuda() for r in ("same", "spread", "random")]
    moe_triton.fused_experts(**case)  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = moe_triton.fused_experts(**case)
    for chosen in routings:
        case["chosen"].copy_(chosen)
        graph.replay()
        assert torch.equal(out, moe_triton.fused_experts(**case))


HOPPER_SHARED_MEMORY = 227 * 1024  # the most one H100 program may ask for


def _compile_for_hopper(kernel, args: dict, constexprs: dict, warps: int = 4, stages: int = 3):
    """kernel compiled for sm_90 here (no GPU needed: Triton's own ptxas), args typed by example
    and specialised as a launch would (pointers and multiples of 16 known divisible by 16, which
    is what lets Triton pipeline the loads through shared memory)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    types = {torch.bfloat16: "bf16", torch.float32: "fp32", torch.int32: "i32", torch.int64: "i64"}
    signature = {k: f"*{types[v.dtype]}" if isinstance(v, torch.Tensor) else "fp32" if isinstance(v, float) else "i32"
                 for k, v in args.items()}
    divisible = {(i,): [["tt.divisibility", 16]] for i, v in enumerate(args.values())
                 if isinstance(v, torch.Tensor) or (isinstance(v, int) and v % 16 == 0)}
    signature.update(dict.fromkeys(constexprs, "constexpr"))
    src = ASTSource(kernel, signature, {(list(signature).index(k),): v for k, v in constexprs.items()}, divisible)
    return moe_triton.triton.compile(src, target=GPUTarget("cuda", 90, 32),
                                     options={"num_warps": warps, "num_stages": stages})


@pytest.mark.parametrize("tokens", [32, 1024])
def test_kernels_compile_for_hopper_within_its_shared_memory(tokens):
    """What the interpreter cannot check: the chosen launch shapes of LLaDA2.0-mini compile for an H100."""
    from fastdllm_ray.model import moe_router_triton as router
    from fastdllm_ray.model import moe_triton_kernels as k

    experts, hidden, inter, top_k = 256, 2048, 512, 8
    cfg = moe_triton.choose_config(tokens * top_k, experts)
    t = lambda *shape, dtype=torch.bfloat16: torch.empty(*shape, dtype=dtype)  # noqa: E731
    pairs, i32 = tokens * (top_k + 1), torch.int32
    scalars = {"pairs": pairs, "experts": experts, "hidden": hidden, "inter": inter}
    route = {"sorted_ids": t(1, dtype=i32), "block_expert": t(1, dtype=i32), "rows_used": t(1, dtype=i32)}
    compiled = [
        _compile_for_hopper(k.align_kernel, {"chosen": t(1, dtype=torch.int64), **route, "routed": tokens * top_k,
                                             "experts": experts},
                            {"TOP_K": top_k, "SHARED": 1, "EXPERTS_P2": experts, "BLOCK_M": cfg.block_m,
                             "CHUNK": min(1024, tokens * top_k)}),
        _compile_for_hopper(k.gate_up_kernel, {"x": t(1), "w": t(1), "shared_gate": t(1), "shared_up": t(1),
                                               "h": t(1), **route, **scalars, "stride_x": hidden,
                                               "stride_we": 2 * inter * hidden, "stride_wn": hidden, "stride_h": inter},
                            {"STRIDE": top_k + 1, "SHARED": 1, "BLOCK_M": cfg.block_m, "BLOCK_N": cfg.gate_up.block_n,
                             "BLOCK_K": cfg.gate_up.block_k, "EVEN_K": True, "IEEE": False},
                            cfg.gate_up.warps, cfg.gate_up.stages),
        _compile_for_hopper(k.down_kernel, {"h": t(1), "w": t(1), "shared_down": t(1), "pair_out": t(1), **route,
                                            **scalars, "stride_h": inter, "stride_we": hidden * inter, "stride_wn": inter,
                                            "stride_out": hidden},
                            {"SHARED": 1, "BLOCK_M": cfg.block_m, "BLOCK_N": cfg.down.block_n,
                             "BLOCK_K": cfg.down.block_k, "EVEN_K": True, "IEEE": False}, cfg.down.warps,
                            cfg.down.stages),
        _compile_for_hopper(k.combine_kernel, {"pair_out": t(1), "weights": t(1, dtype=torch.float32), "out": t(1),
                                               "hidden": hidden}, {"TOP_K": top_k, "SHARED": 1, "BLOCK": 1024}),
        _compile_for_hopper(router._scores_kernel, {"x": t(1), "w": t(1), "scores": t(1, dtype=torch.float32),
                                                    "tokens": tokens, "experts": experts, "hidden": hidden,
                                                    "stride_x": hidden, "stride_w": hidden},
                            {"BLOCK_T": 16, "BLOCK_E": 16, "BLOCK_K": 64}),
        _compile_for_hopper(router._select_kernel, {"scores": t(1, dtype=torch.float32), "bias": t(1),
                                                    "chosen": t(1, dtype=torch.int64),
                                                    "weights": t(1, dtype=torch.float32), "scaling": 2.5},
                            {"EXPERTS": experts, "GROUPS": 8, "TOPK_GROUP": 4, "TOP_K": top_k, "TOP_K_P2": top_k},
                            warps=1),
    ]
    assert all(c.metadata.shared <= HOPPER_SHARED_MEMORY for c in compiled)
    for gemm in compiled[1:3]:  # tensor cores, fed by asynchronous copies
        assert ("wgmma" if cfg.block_m >= 64 else "mma.sync") in gemm.asm["ptx"] and "cp.async" in gemm.asm["ptx"]


if __name__ == "__main__":  # the interpreter run: python tests/model/test_moe_triton.py OUT
    from tests.model.triton_interpreter import interpreter_as_gpu, poison_new_buffers

    interpreter_as_gpu()
    llada2 = llada2_forward("cpu")  # before the poison: loading the checkpoint must not see it
    poison_new_buffers()
    torch.save({"cases": run_cases("cpu"), "llada2": llada2}, sys.argv[1])
