"""Invalid decoding parameters and prompts are refused with a ValueError naming the field;
a gen_length that does not fill whole blocks is rounded up inside and cut back outside."""

from __future__ import annotations

import math

import pytest

from fastdllm_ray import GenerationParams, generate


@pytest.mark.parametrize("changes, field", [
    (dict(steps=3, gen_length=64, block_length=16), "steps"),  # 4 blocks need >= 4 steps
    (dict(threshold=0.0), "threshold"),
    (dict(threshold=1.5), "threshold"),
    (dict(threshold=-0.1), "threshold"),
    (dict(threshold=math.nan), "threshold"),
    (dict(threshold=0.9, factor=1.0), "threshold and factor"),
    (dict(factor=0.0), "factor"),
    (dict(factor=-1.0), "factor"),
    (dict(factor=math.inf), "factor"),
    (dict(temperature=-0.5), "temperature"),
    (dict(temperature=math.nan), "temperature"),
    (dict(remasking="highest"), "remasking"),
    (dict(cache="paged"), "cache"),
    (dict(steps=32.0), "steps"),
    (dict(steps=True), "steps"),
    (dict(block_length=0), "block_length"),
    (dict(gen_length=0), "gen_length"),
    (dict(gen_length="64"), "gen_length"),
    (dict(stop_at_eos="yes"), "stop_at_eos"),
])
def test_invalid_field_raises_value_error_naming_it(changes, field):
    settings = dict(steps=32, gen_length=64, block_length=16)
    settings.update(changes)
    with pytest.raises(ValueError, match=f"^{field}:"):
        GenerationParams(**settings)


def test_boundary_values_are_accepted():
    GenerationParams(steps=4, gen_length=64, block_length=16, threshold=1.0)
    GenerationParams(steps=1, gen_length=1, block_length=1, factor=1e-6, temperature=0.0)


PARAMS = GenerationParams(steps=8, gen_length=16, block_length=8, stop_at_eos=False)


@pytest.mark.parametrize("prompt, message", [
    ([], "prompt: is empty"),
    ([1, 2, 500, 3], "prompt: contains the mask token"),  # 500 is the refdata model's mask id
    ([1, 2, 512], "prompt: token ids"),  # vocab is 512
    ([1, -1], "prompt: token ids"),
    ([1] * 1009, "prompt: 1009 prompt tokens"),  # + 16 answer tokens > max_sequence_length 1024
])
def test_invalid_prompt_raises_value_error_through_generate(ref_model, prompt, message):
    with pytest.raises(ValueError, match=message):
        generate(ref_model, [[1, 2, 3], prompt], PARAMS)


def test_longest_prompt_that_fits_runs(ref_model):
    result = generate(ref_model, [[1] * 1008], PARAMS)[0]
    assert len(result.token_ids) == 16


def test_one_params_per_prompt_or_one_for_all(ref_model):
    with pytest.raises(ValueError, match="params"):
        generate(ref_model, [[1, 2], [3, 4]], [PARAMS])


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_gen_length_not_a_multiple_of_block_length_is_rounded_up_then_cut(ref_model, reference, cache):
    prompt = reference["cases"][0]["prompt"]
    ragged = GenerationParams(steps=12, gen_length=21, block_length=8, cache=cache, stop_at_eos=False)
    assert ragged.padded_gen_length == 24 and ragged.block_steps == 4
    result = generate(ref_model, [prompt], ragged)[0]
    whole = generate(ref_model, [prompt], ragged.with_changes(gen_length=24))[0]
    assert len(result.token_ids) == 21
    assert result.token_ids == whole.token_ids[:21]
    assert result.nfe == whole.nfe


def test_params_that_are_not_generation_params_are_refused(ref_model):
    with pytest.raises(ValueError, match="params"):
        generate(ref_model, [[1, 2]], [{"steps": 8}])


def test_prompts_as_arrays_or_tensors_give_the_same_answer(ref_model):
    import numpy as np
    import torch

    ids = [1, 2, 3, 4]
    as_list = generate(ref_model, [ids], PARAMS)[0].token_ids
    assert generate(ref_model, [np.array(ids)], PARAMS)[0].token_ids == as_list
    assert generate(ref_model, [torch.tensor(ids)], PARAMS)[0].token_ids == as_list
    with pytest.raises(ValueError, match="prompt"):
        generate(ref_model, [[1.0, 2.5]], PARAMS)
