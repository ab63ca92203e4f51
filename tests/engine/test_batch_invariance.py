"""A batch of prompts of different lengths, each with its own decoding parameters, gives
every prompt the same tokens and NFE as decoding it alone."""

from __future__ import annotations

import torch

from fastdllm_ray import GenerationParams, generate


def prompts(reference: dict) -> list[list[int]]:
    from_refdata = list(dict.fromkeys(tuple(c["prompt"]) for c in reference["cases"]))
    gen = torch.Generator().manual_seed(0)
    extra = [torch.randint(0, 500, (n,), generator=gen).tolist() for n in (13, 40, 1, 21, 33)]
    return [list(p) for p in from_refdata] + extra


MIXED = [  # every cache mode x rule, block lengths 8/16/32, steps per block 1..8, ragged gen_length
    GenerationParams(steps=64, gen_length=64, block_length=16, threshold=0.9, cache="dual"),
    GenerationParams(steps=10, gen_length=40, block_length=8, factor=1.0, cache="prefix"),
    GenerationParams(steps=16, gen_length=32, block_length=8, cache="none"),
    GenerationParams(steps=12, gen_length=30, block_length=8, cache="dual"),
    GenerationParams(steps=64, gen_length=64, block_length=32, threshold=0.5, cache="prefix"),
    GenerationParams(steps=24, gen_length=48, block_length=16, factor=0.5, cache="dual"),
    GenerationParams(steps=8, gen_length=16, block_length=16, threshold=0.7, cache="none"),
    GenerationParams(steps=4, gen_length=32, block_length=8, cache="prefix"),
]


def check_batch_equals_alone(model, prompt_list, params_list) -> None:
    batched = generate(model, prompt_list, params_list)
    for prompt, params, result in zip(prompt_list, params_list, batched):
        alone = generate(model, [prompt], params)[0]
        assert (result.token_ids, result.nfe, result.finish_reason) == \
            (alone.token_ids, alone.nfe, alone.finish_reason), (len(prompt), params)


def test_mixed_lengths_and_params_match_each_prompt_alone(ref_model, reference):
    params = [p.with_changes(stop_at_eos=False) for p in MIXED]
    check_batch_equals_alone(ref_model, prompts(reference), params)


def test_batch_with_early_stops_matches_each_prompt_alone(ref_model, reference):
    # With an end token the model often produces, rows leave the batch at different blocks.
    ref_model.end_token_ids = (69,)
    results = generate(ref_model, prompts(reference), MIXED)
    assert {r.finish_reason for r in results} == {"stop", "length"}
    check_batch_equals_alone(ref_model, prompts(reference), MIXED)


def test_batch_larger_than_max_batch_size_matches_each_prompt_alone(ref_model, reference):
    # Only three live sequences at once: the rest wait and join as slots free up.
    prompt_list = prompts(reference)
    params = [p.with_changes(stop_at_eos=False) for p in MIXED]
    batched = generate(ref_model, prompt_list, params, max_batch_size=3)
    wide = generate(ref_model, prompt_list, params)
    assert [(r.token_ids, r.nfe) for r in batched] == [(r.token_ids, r.nfe) for r in wide]
