"""On CUDA (run through the device tool; skipped elsewhere): the engine with CUDA graphs,
torch.compile'd blocks, the fused RoPE/cache kernel and the paged attention kernel decodes
what the eager engine and the Fast-dLLM reference decode, on the refdata checkpoint in
float32, also when requests join while others run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fastdllm_ray.decoding import policy_for
from fastdllm_ray import Engine, EngineConfig, load_model
from tests.engine.test_engine_scheduling import run_to_end
from tests.engine.test_reference_exactness import params_of
from tests.engine.test_step_events import run_pair

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the device tool)")
REFDATA = Path(__file__).parents[1] / "fixtures/refdata"
CASES = json.loads((REFDATA / "reference.json").read_text())["cases"]


def longest_of(model, prompts, params) -> int:
    """Positions the longest request needs, by its family's rules."""
    policy = policy_for(model.config.model_type, model.config.mask_token_id)
    return max(policy.total_len(len(p), policy.effective(q)) for p, q in zip(prompts, params))


def run(model, prompts, params, **config) -> list:
    longest = longest_of(model, prompts, params)
    engine = Engine(model, EngineConfig(max_num_seqs=len(prompts), max_model_len=longest,
                                        max_queue=len(prompts), **config))
    ids = [engine.add_request(p, q) for p, q in zip(prompts, params)]
    results = run_to_end(engine)
    return [results[i] for i in ids]


def run_staggered(model, prompts, params, every: int, warm_up: bool = False, **config) -> list:
    """Adds request i at engine step i * every (later ones join mid-run), with fewer seats than
    requests so some also wait for a seat; returns the results in request order."""
    longest = longest_of(model, prompts, params)
    engine = Engine(model, EngineConfig(max_num_seqs=8, max_model_len=longest, max_queue=len(prompts), **config))
    if warm_up:
        engine.warm_up(block_length=8)
    engine.captures_after_warm_up = engine.runner.captures
    ids, results, step = [], {}, 0
    while len(ids) < len(prompts) or engine.has_unfinished():
        if step % every == 0 and len(ids) < len(prompts):
            ids.append(engine.add_request(prompts[len(ids)], params[len(ids)]))
        for out in engine.step():
            if out.finished:
                results[out.request_id] = out.result
        step += 1
    return [results[i] for i in ids], engine


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    pairs = [(x, y) for ra, rb in zip(a, b) for x, y in zip(ra, rb, strict=True)]
    return sum(x == y for x, y in pairs) / len(pairs)


@pytest.fixture(scope="module")
def cuda_model():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = load_model(REFDATA / "checkpoint", device="cuda", dtype=torch.float32)
    model.end_token_ids = ()
    return model


def test_graphed_engine_decodes_the_reference_tokens(cuda_model):
    prompts, params = [c["prompt"] for c in CASES], [params_of(c) for c in CASES]
    eager = run(cuda_model, prompts, params, cuda_graphs=False, compile_blocks=False)
    graphed = run(cuda_model, prompts, params)  # the defaults: graphs, compile, fused kernel
    expected = [c["output"] for c in CASES]
    # float32 on another device: a near-tie may flip, and a flip changes what follows it
    assert agreement([r.token_ids for r in eager], expected) >= 0.99
    assert agreement([r.token_ids for r in graphed], expected) >= 0.99
    fixed = [i for i, c in enumerate(CASES) if "threshold" not in c and "factor" not in c]
    assert [graphed[i].nfe for i in fixed] == [CASES[i]["useful_nfe"] for i in fixed]
    assert all(cuda_model.config.mask_token_id not in r.token_ids for r in graphed)


def test_sampling_rows_share_a_graphed_batch(cuda_model):
    # temperature and random remasking draw from the engine's generator outside the graph;
    # the same seed gives the same draws whether the forward was replayed or not
    prompts = [c["prompt"] for c in CASES[:6]]
    params = [replace(params_of(c), temperature=0.7 if i % 2 else 0.0,
                      remasking="random" if i % 3 == 0 else "low_confidence")
              for i, c in enumerate(CASES[:6])]
    eager = run(cuda_model, prompts, params, cuda_graphs=False, seed=3)
    graphed = run(cuda_model, prompts, params, seed=3)
    assert agreement([r.token_ids for r in graphed], [r.token_ids for r in eager]) >= 0.99
    assert all(cuda_model.config.mask_token_id not in r.token_ids for r in graphed)


def test_requests_joining_mid_run_decode_what_the_eager_engine_does(cuda_model):
    prompts, params = [c["prompt"] for c in CASES], [params_of(c) for c in CASES]
    eager, _ = run_staggered(cuda_model, prompts, params, every=3, cuda_graphs=False, compile_blocks=False)
    graphed, engine = run_staggered(cuda_model, prompts, params, every=3, warm_up=True)
    assert agreement([r.token_ids for r in graphed], [r.token_ids for r in eager]) >= 0.99
    assert agreement([r.token_ids for r in graphed], [c["output"] for c in CASES]) >= 0.99
    assert engine.runner.captures == engine.captures_after_warm_up > 0  # no capture beyond warm-up's


def test_step_events_ride_on_graphed_steps_without_changing_them(cuda_model):
    # stream_steps reads the block the graphed forward already copied to the host: the request
    # that asks decodes exactly what its twin without events does, in the same graphed batch
    # (the defaults: graphs, compile, fused kernel), and its events add up to that answer
    case = next((c for c in CASES if "threshold" in c and c["cache"] == "dual"), CASES[0])
    params = params_of(case)
    with_steps, plain = run_pair(cuda_model, params, case["prompt"],
                                 max_model_len=len(case["prompt"]) + params.padded_gen_length, max_queue=2)
    steps, twin = with_steps[-1].result, plain[-1].result
    assert (steps.token_ids, steps.nfe) == (twin.token_ids, twin.nfe)
    events = [o.step for o in with_steps]
    assert None not in events and len(events) == steps.nfe
    committed = {p: t for e in events for p, t in zip(e.positions, e.token_ids, strict=True)}
    assert [committed[i] for i in range(len(steps.token_ids))] == steps.token_ids
