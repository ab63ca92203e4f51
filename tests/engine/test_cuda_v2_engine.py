"""On CUDA (run through the device tool; skipped elsewhere): a Fast-dLLM v2 checkpoint through
the graphed engine (CUDA graphs, compiled blocks, the fused RoPE/cache kernel, the paged attention
kernel with block-causal prefill rows, v2's confidences) decodes what the eager engine and the
reference decode on the refdata-v2 checkpoint in float32, also joining mid-run and sharing
prefixes, with no capture beyond warm-up's."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from fastdllm_ray import load_model
from tests.conftest import V2_CHECKPOINT
from tests.engine.test_cuda_engine import run, run_staggered
from tests.engine.test_fast_dllm_v2_exactness import CASES, params_of

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the device tool)")


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    """Positions equal over the longer answer of each pair (a flip can end an answer sooner)."""
    same = sum(x == y for ra, rb in zip(a, b) for x, y in zip(ra, rb))
    return same / sum(max(len(ra), len(rb)) for ra, rb in zip(a, b))


@pytest.fixture(scope="module")
def cuda_v2():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return load_model(V2_CHECKPOINT, device="cuda", dtype=torch.float32)


def test_graphed_v2_engine_decodes_what_the_eager_one_and_the_reference_do(cuda_v2):
    prompts, params = [c["prompt"] for c in CASES], [params_of(c) for c in CASES]
    eager = run(cuda_v2, prompts, params, cuda_graphs=False, compile_blocks=False)
    graphed = run(cuda_v2, prompts, params)
    expected = [c["output"] for c in CASES]
    # float32 on another device: a near-tie may flip (3 cases have margins under 1e-4)
    assert agreement([r.token_ids for r in eager], expected) >= 0.95
    assert agreement([r.token_ids for r in graphed], [r.token_ids for r in eager]) >= 0.99
    assert all(cuda_v2.config.mask_token_id not in r.token_ids for r in graphed)


def test_v2_sampling_rows_share_a_graphed_batch(cuda_v2):
    prompts = [c["prompt"] for c in CASES[:8]]
    params = [replace(params_of(c), temperature=0.7 if i % 2 else 0.0) for i, c in enumerate(CASES[:8])]
    eager = run(cuda_v2, prompts, params, cuda_graphs=False, seed=3)
    graphed = run(cuda_v2, prompts, params, seed=3)
    greedy = [i for i in range(8) if i % 2 == 0]
    assert agreement([graphed[i].token_ids for i in greedy], [eager[i].token_ids for i in greedy]) >= 0.99


def test_v2_requests_joining_mid_run_decode_what_the_eager_engine_does(cuda_v2):
    prompts, params = [c["prompt"] for c in CASES], [params_of(c) for c in CASES]
    eager, _ = run_staggered(cuda_v2, prompts, params, every=3, cuda_graphs=False, compile_blocks=False)
    graphed, engine = run_staggered(cuda_v2, prompts, params, every=3, warm_up=True)
    assert agreement([r.token_ids for r in graphed], [r.token_ids for r in eager]) >= 0.99
    assert engine.runner.captures == engine.captures_after_warm_up > 0
    assert engine.stats.cached_prompt_tokens > 0  # the four cases of each prompt shared its prefill
