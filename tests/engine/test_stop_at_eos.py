"""Stopping at an end token saves the forwards of the blocks after it and leaves every
token up to it unchanged."""

from __future__ import annotations

import pytest

from fastdllm_ray import GenerationParams, generate


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_stop_at_end_token_saves_forwards_and_keeps_the_text_before_it(ref_model, reference, cache):
    prompt = reference["cases"][0]["prompt"]
    params = GenerationParams(steps=32, gen_length=32, block_length=8, cache=cache, stop_at_eos=False)
    full = generate(ref_model, [prompt], params)[0]
    # an end token that the model really produces, first in the third of four blocks
    end_token = next(t for t in full.token_ids[16:24] if t not in full.token_ids[:16])
    ref_model.end_token_ids = (end_token,)

    stopped = generate(ref_model, [prompt], params.with_changes(stop_at_eos=True))[0]
    cut = full.token_ids.index(end_token) + 1
    assert stopped.token_ids == full.token_ids[:cut]
    assert stopped.token_ids[-1] == end_token
    assert stopped.finish_reason == "stop"
    assert stopped.nfe == 24 < full.nfe == 32  # the fourth block never ran
    # with stop_at_eos=False the end token does not stop anything
    assert generate(ref_model, [prompt], params)[0].token_ids == full.token_ids


def test_end_token_in_the_rounded_up_tail_is_not_a_stop(ref_model, reference):
    # gen_length 28 decodes a 32-token canvas; what lies beyond 28 is not part of the answer.
    prompt = reference["cases"][0]["prompt"]
    params = GenerationParams(steps=32, gen_length=28, block_length=8, cache="dual", stop_at_eos=False)
    padded = generate(ref_model, [prompt], params.with_changes(gen_length=32))[0]
    tail_only = [t for t in padded.token_ids[28:] if t not in padded.token_ids[:28]]
    assert tail_only, "this model's canvas has no token that occurs only in the tail"
    ref_model.end_token_ids = (tail_only[0],)
    result = generate(ref_model, [prompt], params.with_changes(stop_at_eos=True))[0]
    assert result.token_ids == padded.token_ids[:28]
    assert result.finish_reason == "length"
