"""On CUDA (run through the device tool; skipped elsewhere): a Dream checkpoint through the
graphed engine (CUDA graphs, torch.compile'd blocks with q/k/v biases, the fused RoPE/cache
kernel over grouped K/V heads, the paged attention kernel, Dream's compiled confidences)
decodes what the eager engine and Fast-dLLM's Dream code decode, on the refdata-dream
checkpoint in float32, also when requests join while others run, with no capture beyond
warm-up's."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fastdllm_ray import load_model
from tests.engine.test_cuda_engine import agreement, run, run_staggered
from tests.engine.test_dream_exactness import params_of

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the device tool)")
REFDATA = Path(__file__).parents[1] / "fixtures/refdata-dream"
CASES = json.loads((REFDATA / "reference.json").read_text())["cases"]


@pytest.fixture(scope="module")
def cuda_dream():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = load_model(REFDATA / "checkpoint", device="cuda", dtype=torch.float32)
    model.end_token_ids = ()
    return model


def test_graphed_dream_engine_decodes_what_the_eager_one_and_the_reference_do(cuda_dream):
    prompts, params = [c["prompt"] for c in CASES], [params_of(c) for c in CASES]
    eager = run(cuda_dream, prompts, params, cuda_graphs=False, compile_blocks=False)
    graphed = run(cuda_dream, prompts, params)  # the defaults: graphs, compile, fused kernel
    expected = [c["output"] for c in CASES]
    # float32 on another device: a near-tie may flip, and a flip changes what follows it
    assert agreement([r.token_ids for r in eager], expected) >= 0.95
    assert agreement([r.token_ids for r in graphed], [r.token_ids for r in eager]) >= 0.99
    fixed = [i for i, c in enumerate(CASES) if c["alg"] != "confidence_threshold"]
    assert [graphed[i].nfe for i in fixed] == [CASES[i]["forwards"] for i in fixed]
    assert all(cuda_dream.config.mask_token_id not in r.token_ids for r in graphed)


def test_dream_sampling_rows_share_a_graphed_batch(cuda_dream):
    prompts = [c["prompt"] for c in CASES[:8]]
    params = [replace(params_of(c), temperature=0.7 if i % 2 else 0.0) for i, c in enumerate(CASES[:8])]
    eager = run(cuda_dream, prompts, params, cuda_graphs=False, seed=3)
    graphed = run(cuda_dream, prompts, params, seed=3)
    assert agreement([r.token_ids for r in graphed], [r.token_ids for r in eager]) >= 0.99
    assert all(cuda_dream.config.mask_token_id not in r.token_ids for r in graphed)


def test_dream_requests_joining_mid_run_decode_what_the_eager_engine_does(cuda_dream):
    prompts, params = [c["prompt"] for c in CASES], [params_of(c) for c in CASES]
    eager, _ = run_staggered(cuda_dream, prompts, params, every=3, cuda_graphs=False, compile_blocks=False)
    graphed, engine = run_staggered(cuda_dream, prompts, params, every=3, warm_up=True)
    assert agreement([r.token_ids for r in graphed], [r.token_ids for r in eager]) >= 0.99
    assert engine.runner.captures == engine.captures_after_warm_up > 0
