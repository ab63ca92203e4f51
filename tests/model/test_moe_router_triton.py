"""The Triton router (model/moe_router_triton.py) chooses the experts the torch router chooses,
in its order, with its weights: LLaDA2.0's grouped sigmoid routing with selection bias and
scaling, for the tiny checkpoint's shape and LLaDA2.0-mini's. Where there is no GPU the kernels
run under Triton's interpreter in a subprocess (tests/model/triton_interpreter.py). Skipped
where Triton is not installed (it is not a project dependency)."""

from __future__ import annotations

import sys

import pytest
import torch

from fastdllm_ray.model import llada2_moe, moe_router_triton, moe_triton
from fastdllm_ray.model.llada2_moe import route, uses_triton

pytestmark = pytest.mark.skipif(moe_triton.triton is None, reason="Triton is not installed")

# name -> (tokens, experts, n_group, topk_group, top_k, dtype): the tiny checkpoint's router, then LLaDA2.0-mini's
CASES = {f"{tokens}-tokens-{experts}-experts-{dtype}": (tokens, experts, groups, kept, k, dtype)
         for tokens in (1, 7, 32, 100) for experts, groups, kept, k in ((16, 4, 2, 4), (256, 8, 4, 8))
         for dtype in ("float32", "bfloat16")}


def make_case(tokens: int, experts: int, dtype: str, hidden: int = 96) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(tokens + experts)
    dt = getattr(torch, dtype)
    return {"x": torch.randn(tokens, hidden, generator=gen).to(dt),
            "weight": (torch.randn(experts, hidden, generator=gen) * hidden ** -0.5).to(dt),
            "expert_bias": (torch.randn(experts, generator=gen) * 0.1).to(dt)}


def run_cases(device: str) -> dict[str, dict[str, torch.Tensor]]:
    results = {}
    for name, (tokens, experts, groups, kept, k, dtype) in CASES.items():
        case = {key: v.to(device) for key, v in make_case(tokens, experts, dtype).items()}
        chosen, weights = moe_router_triton.route(**case, n_group=groups, topk_group=kept, top_k=k, scaling=2.5)
        results[name] = {"chosen": chosen.cpu(), "weights": weights.cpu()}
    return results


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    if torch.cuda.is_available():
        return run_cases("cuda")
    from tests.model.triton_interpreter import results_of

    return results_of(__file__, tmp_path_factory.mktemp("router") / "results.pt")


@pytest.mark.parametrize("name", list(CASES))
def test_triton_router_chooses_the_torch_routers_experts_in_order(results, name):
    tokens, experts, groups, kept, k, dtype = CASES[name]
    chosen, weights = route(**make_case(tokens, experts, dtype), n_group=groups, topk_group=kept, top_k=k, scaling=2.5)
    assert torch.equal(results[name]["chosen"], chosen)
    assert torch.allclose(results[name]["weights"], weights, atol=1e-6, rtol=0)


def test_router_kernels_take_powers_of_two_groups_only():
    assert moe_router_triton.fits(256, 8) and moe_router_triton.fits(16, 4)
    assert not moe_router_triton.fits(96, 4)  # 96 experts: the torch router runs
    assert not moe_router_triton.fits(16, 16)  # a group must hold two


@pytest.mark.skipif(moe_triton.interpreting() or torch.cuda.is_available(), reason="the plain CPU's choice")
def test_on_the_cpu_the_switch_keeps_torch_ops_and_refuses_forced_kernels(monkeypatch):
    x = torch.randn(3, 8)
    for backend in ("auto", "grouped_mm"):
        monkeypatch.setattr(llada2_moe, "MOE_BACKEND", backend)
        assert not uses_triton(x)
    monkeypatch.setattr(llada2_moe, "MOE_BACKEND", "triton")
    with pytest.raises(RuntimeError, match="FASTDLLM_MOE_BACKEND=triton"):
        uses_triton(x)


if __name__ == "__main__":  # the interpreter run: python tests/model/test_moe_router_triton.py OUT
    from tests.model.triton_interpreter import interpreter_as_gpu

    interpreter_as_gpu()
    torch.save(run_cases("cpu"), sys.argv[1])
