"""On CUDA (run through the device tool; skipped elsewhere): a LLaDA2.0 checkpoint through the
graphed engine (CUDA graphs, the grouped-GEMM experts, the paged attention kernel with
block-causal rows) decodes what the eager engine and the reference decode on the refdata-llada2
checkpoint in float32, also joining mid-run, with no capture beyond warm-up's."""

from __future__ import annotations

import pytest
import torch

from fastdllm_ray import load_model
from tests.engine.test_cuda_engine import run, run_staggered
from tests.engine.test_cuda_v2_engine import agreement
from tests.engine.test_llada2_exactness import CASES, REFDATA, answer_of, params_of

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the device tool)")


@pytest.fixture(scope="module")
def cuda_llada2():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return load_model(REFDATA / "checkpoint", device="cuda", dtype=torch.float32)


def test_graphed_llada2_engine_decodes_what_the_eager_one_and_the_reference_do(cuda_llada2):
    prompts, params = [c["prompt"] for c in CASES], [params_of(c) for c in CASES]
    eager = run(cuda_llada2, prompts, params, cuda_graphs=False, compile_blocks=False)
    graphed = run(cuda_llada2, prompts, params)
    assert agreement([r.token_ids for r in eager], [answer_of(c) for c in CASES]) >= 0.95
    assert agreement([r.token_ids for r in graphed], [r.token_ids for r in eager]) >= 0.99


def test_llada2_requests_joining_mid_run_decode_what_the_eager_engine_does(cuda_llada2):
    prompts, params = [c["prompt"] for c in CASES], [params_of(c) for c in CASES]
    eager, _ = run_staggered(cuda_llada2, prompts, params, every=3, cuda_graphs=False, compile_blocks=False)
    graphed, engine = run_staggered(cuda_llada2, prompts, params, every=3, warm_up=True)
    assert agreement([r.token_ids for r in graphed], [r.token_ids for r in eager]) >= 0.99
    assert engine.runner.captures == engine.captures_after_warm_up > 0
