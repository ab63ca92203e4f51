"""LLaDA2.0's decoding rules beyond the vectors: its commit rule (strictly above the threshold when
that makes the step's quota, else the quota), its defaults (the reference generate's), its fields
(steps_per_block, top_p, top_k; other families' refused by name, and steps_per_block refused on
them), sampling from the cut distribution, step events, and a model that ranks the mask first."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fastdllm_ray import GenerationParams, generate, load_model
from fastdllm_ray.decoding import StepRules, policy_for, select_transfer
from fastdllm_ray.decoding.fast_dllm_v2 import strictly_above
from fastdllm_ray.decoding.llada2 import llada2_predict
from fastdllm_ray.decoding.select import RULE_QUOTA_THRESHOLD
from fastdllm_ray.engine import Engine, EngineConfig

REFDATA = Path(__file__).parents[1] / "fixtures" / "refdata-llada2"
CASES = {c["id"]: c for c in json.loads((REFDATA / "reference.json").read_text())["cases"]}


@pytest.fixture(scope="module")
def model():
    return load_model(REFDATA / "checkpoint")


def quota_rules(quota: list[int], threshold: float, temperature: float = 0.0, top_k: int = 0,
                top_p: float = 1.0) -> StepRules:
    rows = len(quota)
    return StepRules(rule=torch.full((rows,), RULE_QUOTA_THRESHOLD), fixed_count=torch.tensor(quota),
                     threshold=torch.full((rows,), strictly_above(threshold), dtype=torch.float64),
                     factor=torch.ones(rows, dtype=torch.float64),
                     temperature=torch.full((rows,), temperature, dtype=torch.float64),
                     random_remasking=torch.zeros(rows, dtype=torch.bool), any_sampling=temperature > 0,
                     any_random=False, top_k=torch.full((rows,), top_k), top_p=torch.full((rows,), top_p,
                                                                                          dtype=torch.float64))


def committed(confidence: list[list[float]], masked: list[list[bool]], rules: StepRules) -> list[list[int]]:
    chosen = select_transfer(torch.tensor(confidence, dtype=torch.float32), torch.tensor(masked), rules)
    return [torch.nonzero(row).flatten().tolist() for row in chosen]


def test_all_strictly_above_the_threshold_when_they_make_the_quota_else_the_quota():
    conf = [[0.97, 0.5, 0.99, 0.96, 0.2]] * 4
    masked = [[True] * 5, [True] * 5, [False, True, True, False, True], [True] * 5]
    # rows: 3 above >= quota 2 (all 3, more than the quota); 3 above < quota 4 (the 4 most
    # confident); 1 above < quota 2 among 3 masked; quota 9 > 5 masked (all of them)
    rules = quota_rules([2, 4, 2, 9], threshold=0.95)
    assert committed(conf, masked, rules) == [[0, 2, 3], [0, 1, 2, 3], [1, 2], [0, 1, 2, 3, 4]]


def test_a_confidence_equal_to_the_threshold_is_not_above_it_and_one_is_pure_quota():
    t = float(np.float32(0.8))  # exactly representable in the float32 confidence
    conf = [[t, 0.9, 0.1]]
    assert committed(conf, [[True] * 3], quota_rules([1], threshold=t)) == [[1]]  # 0.9 only, not 0.8
    assert committed(conf, [[True] * 3], quota_rules([2], threshold=t)) == [[0, 1]]  # the quota
    assert committed([[1.0, 1.0, 0.5]], [[True] * 3], quota_rules([1], threshold=1.0)) == [[0]]  # never above 1.0


def test_defaults_are_the_reference_generate_ones():
    policy = policy_for("llada2_moe", 500)
    p = policy.effective(GenerationParams(gen_length=256))
    assert (p.steps_per_block, p.threshold, p.block_length) == (32, 0.95, 32)
    # steps = min(32, gen_length // minimal_topk) with minimal_topk 1
    assert policy.effective(GenerationParams(gen_length=20)).steps_per_block == 20
    # a vector whose minimal_topk capped its steps: steps_per_block is what the cap left
    capped = CASES["public-06"]
    assert (capped["steps"], capped["minimal_topk"], capped["effective_steps"]) == (32, 4, 12)


@pytest.mark.parametrize("field, value", [("steps", 32), ("cache", "dual"), ("factor", 1.0),
                                          ("remasking", "random"), ("alg", "entropy"), ("sub_block_length", 8),
                                          ("block_cache", True)])
def test_other_families_fields_are_refused_by_name(model, field, value):
    with pytest.raises(ValueError, match=f"^{field}: applies to .* not to LLaDA2.0"):
        generate(model, [[1, 2, 3]], GenerationParams(gen_length=32, **{field: value}))


@pytest.mark.parametrize("other", ["ref_model", "dream_model", "v2_model"])
def test_steps_per_block_is_refused_by_name_on_the_other_families(request, other):
    with pytest.raises(ValueError, match="^steps_per_block: applies to LLaDA2.0 models"):
        generate(request.getfixturevalue(other), [[1, 2, 3]], GenerationParams(gen_length=32, steps_per_block=8))


def test_an_answer_not_stopped_at_eos_runs_to_gen_length_past_the_reference_answer(model):
    case = CASES["public-17"]  # the reference answer ends with EOS after 8 tokens
    params = GenerationParams(gen_length=case["gen_length"], block_length=case["block_length"],
                              threshold=case["threshold"], steps_per_block=case["effective_steps"])
    result = generate(model, [case["prompt"]], params.with_changes(stop_at_eos=False))[0]
    assert len(result.token_ids) == case["gen_length"] and result.finish_reason == "length"
    assert result.token_ids[:len(case["output"])] == case["output"]


def test_sampling_draws_only_inside_top_k_and_the_nucleus_with_their_probability():
    logits = torch.log(torch.tensor([[[0.05, 0.5, 0.3, 0.15]]])).repeat(1, 4000, 1)  # id 3 is the mask
    gen = torch.Generator().manual_seed(0)
    x0, conf = llada2_predict(logits.clone(), quota_rules([1], 0.9, temperature=1.0, top_k=2), gen, mask_id=3)
    assert set(x0.unique().tolist()) == {1, 2}
    assert abs((x0 == 1).float().mean().item() - 0.5 / 0.8) < 0.03
    assert torch.allclose(conf[x0 == 1], torch.tensor(0.5 / 0.8))
    # the nucleus keeps each id whose more likely ids hold at most top_p: id 1 holds 0.5 / 0.85 = 0.59
    # of the mask-free mass, so top_p 0.6 also keeps id 2 and top_p 0.55 keeps id 1 alone
    x0, _ = llada2_predict(logits.clone(), quota_rules([1], 0.9, temperature=1.0, top_p=0.6), gen, mask_id=3)
    assert set(x0.unique().tolist()) == {1, 2}
    x0, conf = llada2_predict(logits.clone(), quota_rules([1], 0.9, temperature=1.0, top_p=0.55), gen, mask_id=3)
    assert x0.unique().tolist() == [1] and torch.allclose(conf, torch.ones_like(conf))


def test_sampled_answers_are_reproducible_for_a_seed(model):
    params = GenerationParams(gen_length=48, block_length=16, steps_per_block=8, temperature=0.8, top_k=20,
                              stop_at_eos=False)
    prompt = CASES["public-18"]["prompt"]
    first, again = (generate(model, [prompt], params, seed=7)[0] for _ in range(2))
    greedy = generate(model, [prompt], params.with_changes(temperature=0.0))[0]
    assert first.token_ids == again.token_ids and len(first.token_ids) == 48
    assert first.token_ids != greedy.token_ids
    # a greedy request next to sampling ones decodes as alone
    mixed = generate(model, [prompt] * 3, [params, params.with_changes(temperature=0.0), params], seed=7)
    assert (mixed[1].token_ids, mixed[1].nfe) == (greedy.token_ids, greedy.nfe)


def test_step_events_add_up_to_the_answer(model):
    case = CASES["public-19"]  # prompt 48 in blocks of 16: the first decoded block is the 4th
    params = GenerationParams(gen_length=case["gen_length"], block_length=case["block_length"],
                              threshold=case["threshold"], steps_per_block=case["effective_steps"])
    engine = Engine(model, EngineConfig(max_num_seqs=1))
    engine.add_request(case["prompt"], params, request_id="r", stream_steps=True)
    outs = []
    while engine.has_unfinished():
        outs += engine.step()
    result, events = outs[-1].result, [o.step for o in outs]
    assert len(events) == result.nfe == case["forwards"]
    committed = {}
    for event in events:
        for position, token in zip(event.positions, event.token_ids, strict=True):
            assert position not in committed
            committed[position] = token
    assert [committed[i] for i in range(len(result.token_ids))] == result.token_ids == case["output"]


def test_a_model_ranking_the_mask_first_still_completes_without_committing_it(monkeypatch):
    model = load_model(REFDATA / "checkpoint")
    head = model.head
    monkeypatch.setattr(model, "head", lambda x: head(x).index_add(-1, torch.tensor([500]),
                                                                   torch.full((*x.shape[:-1], 1), 1e4)))
    result = generate(model, [[1, 2, 3]], GenerationParams(gen_length=40, block_length=16, stop_at_eos=False))[0]
    assert len(result.token_ids) == 40 and 500 not in result.token_ids
