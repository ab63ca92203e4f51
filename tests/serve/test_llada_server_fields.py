"""The LLaDA OpenAI server's request fields (NeMo-RL's xp/llada_api and the NeMo-Skills eval
beside it) become GenerationParams as ours: `generation_algorithm` and its aliases mean the
cache fields of the model's family, the fields it cannot honour are accepted at their "off"
value and refused by name otherwise, and only what a client sent reaches the family, which
refuses by name what it does not use."""

from __future__ import annotations

import pytest

from fastdllm_ray import load_tokenizer
from fastdllm_ray.decoding import policy_for
from fastdllm_ray.model.shipped import DEFAULT_MODEL_NAME, default_model_path
from fastdllm_ray.serve.convert import PromptEncoder, RequestError, chat_request
from fastdllm_ray.serve.protocol import ChatCompletionRequest

CONTEXT = 512
MASK = 101  # the shipped model's
LLADA, DREAM, V2 = (policy_for(t, MASK) for t in ("llada", "Dream", "Fast_dLLM_Qwen"))
CACHE_NAMES = [("basic", "none"), ("no_cache", "none"), ("simple", "none"), ("prefix_cache", "prefix"),
               ("prefix", "prefix"), ("cache", "prefix"), ("dual_cache", "dual"), ("dual", "dual"),
               ("double_cache", "dual")]


@pytest.fixture(scope="module")
def encoder():
    return PromptEncoder(load_tokenizer(default_model_path()), 104, MASK)


def params(encoder, policy=LLADA, **fields):
    body = {"model": DEFAULT_MODEL_NAME, "messages": [{"role": "user", "content": "What is 2+3?"}], **fields}
    return chat_request(ChatCompletionRequest.model_validate(body), encoder, CONTEXT, policy=policy).params


def refused(encoder, policy=LLADA, **fields) -> RequestError:
    with pytest.raises(RequestError) as caught:
        params(encoder, policy, **fields)
    assert caught.value.status == 400
    return caught.value


@pytest.mark.parametrize("name, cache", CACHE_NAMES)
@pytest.mark.parametrize("policy", [LLADA, DREAM], ids=["llada", "dream"])
def test_each_algorithm_name_and_alias_is_its_cache_mode(encoder, policy, name, cache):
    assert params(encoder, policy, generation_algorithm=name).cache == cache


@pytest.mark.parametrize("name, cache", [("basic", "none"), ("prefix_cache", "prefix"), ("dual_cache", "dual")])
def test_an_algorithm_and_the_cache_fields_meaning_the_same_are_one_request(encoder, name, cache):
    flags = {"none": dict(use_cache=False), "prefix": dict(use_cache=True, use_dual_cache=False),
             "dual": dict(use_cache=True, use_dual_cache=True)}[cache]
    assert params(encoder, generation_algorithm=name) == params(encoder, **flags)
    assert params(encoder, generation_algorithm=name, **flags) == params(encoder, **flags)


@pytest.mark.parametrize("name, flags", [("basic", dict(use_cache=True)), ("dual", dict(use_dual_cache=False)),
                                         ("prefix_cache", dict(use_cache=False, use_dual_cache=False))])
def test_an_algorithm_and_cache_fields_that_disagree_are_refused_naming_both(encoder, name, flags):
    error = refused(encoder, generation_algorithm=name, **flags)
    assert error.param == "generation_algorithm"
    assert error.message.startswith("generation_algorithm:") and "use_cache/use_dual_cache" in error.message


def test_an_unknown_algorithm_is_refused_listing_the_models_names(encoder):
    error = refused(encoder, generation_algorithm="dinfer_blockwise")
    assert error.param == "generation_algorithm"
    assert all(name in error.message for name, _ in CACHE_NAMES)


def test_fast_dllm_v2_names_its_block_cache_and_refuses_the_canvas_caches(encoder):
    assert params(encoder, V2, generation_algorithm="block_cache", max_tokens=64).block_cache is True
    assert params(encoder, V2, generation_algorithm="basic", max_tokens=64).block_cache is False
    error = refused(encoder, V2, generation_algorithm="dual_cache", max_tokens=64)
    assert error.param == "generation_algorithm" and "block_cache" in error.message and "dual" in error.message
    assert refused(encoder, V2, generation_algorithm="basic", block_cache=True, max_tokens=64).param == \
        "generation_algorithm"


def test_nemo_skills_defaults_are_accepted_on_llada(encoder):
    sent = params(encoder, top_p=0.95, top_k=-1, cfg_scale=0.0, remasking="low_confidence", presence_penalty=1.0,
                  logprobs=False, top_logprobs=None, seed=0, steps=128, block_length=32, use_cache=True,
                  use_dual_cache=True)
    assert (sent.top_p, sent.top_k, sent.remasking, sent.cache, sent.steps) == (0.95, None, "low_confidence",
                                                                                 "dual", 128)


@pytest.mark.parametrize("fields, param", [
    (dict(cfg_scale=1.5), "cfg_scale"),
    (dict(presence_penalty=0.5), "presence_penalty"),
    (dict(logprobs=True), "logprobs"),
    (dict(top_logprobs=3), "top_logprobs"),
    (dict(top_k=-2), "top_k"),
    (dict(top_k=0), "top_k"),
])
def test_a_field_we_cannot_honour_is_refused_by_name_with_the_reason(encoder, fields, param):
    error = refused(encoder, **fields)
    assert error.param == param and error.message.startswith(f"{param}:")
    assert "not supported" in error.message or "not available" in error.message or "-1" in error.message


def test_only_what_was_sent_reaches_the_family(encoder):
    assert params(encoder, DREAM).remasking is None  # the seed's default is not sent on the client's behalf
    assert refused(encoder, DREAM, remasking="low_confidence").param == "remasking"
    assert refused(encoder, V2, steps=64, max_tokens=64).param == "steps"
    assert refused(encoder, V2, use_cache=True, max_tokens=64).param == "use_cache"
    assert refused(encoder, LLADA, steps_per_block=4).param == "steps_per_block"
    assert refused(encoder, LLADA, block_cache=True).param == "block_cache"


def test_fast_dllm_v2_fields_pass_through(encoder):
    v2 = params(encoder, V2, max_tokens=64, block_length=32, sub_block_length=8, block_cache=True, threshold=0.9)
    assert (v2.gen_length, v2.sub_block_length, v2.block_cache, v2.threshold, v2.steps) == (64, 8, True, 0.9, None)
