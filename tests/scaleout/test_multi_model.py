"""Two checkpoints behind one ingress, each request routed by its `model`: the shipped model
and a random one of another size and vocabulary. Each answers with the text it gives alone
(so the request reached that model), under its own limits, from its own replicas."""

from __future__ import annotations

import pytest
from openai import BadRequestError, OpenAI
from tests.conftest import TINY_DREAM, TINY_LLADA2, TINY_V2
from tests.scaleout.scaleout_models import AUTOSCALED, DREAM, FATES, LLADA2, PAIR, PREFIX, RANDOM, V2
from tests.serve.alone import answer_alone

from fastdllm_ray import generate, load_model, load_tokenizer
from fastdllm_ray.model.shipped import default_model_path
from fastdllm_ray.serve.convert import PromptEncoder, chat_request
from fastdllm_ray.serve.protocol import ChatCompletionRequest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]

SETTINGS = {"max_tokens": 64, "block_length": 32, "steps": 64}  # the shipped model answers well


@pytest.fixture(scope="module")
def client(app) -> OpenAI:
    return OpenAI(base_url=f"{app.url}/v1", api_key="unused", max_retries=0, timeout=60)


def alone(checkpoint, question: str, max_model_len: int, **extra) -> tuple:
    """What the checkpoint answers to a chat question outside the server."""
    model, tokenizer = load_model(checkpoint), load_tokenizer(checkpoint)
    encoder = PromptEncoder(tokenizer, model.config.embedding_size, model.config.mask_token_id)
    body = ChatCompletionRequest(model="any", messages=[{"role": "user", "content": question}], **SETTINGS, **extra)
    request = chat_request(body, encoder, max_model_len)
    result = generate(model, [request.prompt_ids], request.params)[0]
    text = tokenizer.decode(result.token_ids, skip_special_tokens=True)
    return text, result.finish_reason, len(result.token_ids), result.nfe


def test_models_lists_every_model_with_its_own_length(client):
    cards = {card.id: card.model_extra["max_model_len"] for card in client.models.list().data}
    assert cards == {FATES: 512, PAIR: 512, RANDOM: 1024, AUTOSCALED: 512, DREAM: 256, V2: 512, LLADA2: 512,
                     PREFIX: 512}


def test_each_request_reaches_the_model_it_names(client, random_model_dir):
    question, answers = "What is 17+25?", {}
    for name, checkpoint, length in ((FATES, default_model_path(), 512), (RANDOM, random_model_dir, 1024)):
        reply = client.chat.completions.create(model=name, messages=[{"role": "user", "content": question}],
                                               extra_body=SETTINGS)
        assert reply.model == name
        answers[name] = (reply.choices[0].message.content, reply.choices[0].finish_reason,
                         reply.usage.completion_tokens, reply.usage.nfe)
        assert answers[name] == alone(checkpoint, question, length), name
    assert "= 42" in answers[FATES][0]  # the trained model, where it was asked for
    assert answers[FATES] != answers[RANDOM]  # two models, not one model twice


def test_each_model_keeps_its_own_limits(client):
    prompt = "1+" * 300  # 600 tokens: over the shipped model's 512, within the random one's 1024
    with pytest.raises(BadRequestError) as refused:
        client.completions.create(model=FATES, prompt=prompt, extra_body=SETTINGS)
    assert refused.value.body["param"] in ("prompt", "max_tokens")
    reply = client.completions.create(model=RANDOM, prompt=prompt, extra_body=SETTINGS)
    assert reply.usage.prompt_tokens == 600


def test_an_unknown_model_is_refused_naming_the_served_ones(client):
    with pytest.raises(BadRequestError) as refused:
        client.chat.completions.create(model="llada-9000", messages=[{"role": "user", "content": "hi"}])
    error = refused.value.body
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert all(repr(name) in error["message"] for name in (FATES, PAIR, RANDOM, AUTOSCALED))


def test_llada_and_dream_behind_one_ingress_each_by_its_own_rules(client):
    question, dream_only = "What is 17+25?", {"alg": "maskgit_plus"}
    reply = client.chat.completions.create(model=DREAM, messages=[{"role": "user", "content": question}],
                                           extra_body={**SETTINGS, **dream_only})
    assert reply.model == DREAM
    got = (reply.choices[0].message.content, reply.choices[0].finish_reason, reply.usage.completion_tokens,
           reply.usage.nfe)
    assert got == alone(TINY_DREAM, question, 256, **dream_only)
    with pytest.raises(BadRequestError) as refused:  # Dream's rule is not LLaDA's: refused by the LLaDA model
        client.chat.completions.create(model=FATES, messages=[{"role": "user", "content": question}],
                                       extra_body={**SETTINGS, **dream_only})
    assert refused.value.body["param"] == "alg"


@pytest.mark.parametrize("name, checkpoint, own", [
    (V2, TINY_V2, {"threshold": 0.9, "sub_block_length": 4, "block_cache": True}),
    (LLADA2, TINY_LLADA2, {"threshold": 0.8, "steps_per_block": 8}),
])
def test_block_diffusion_models_behind_the_same_ingress_each_by_its_own_rules(client, name, checkpoint, own):
    messages = [{"role": "user", "content": "What is 17+25?"}]
    reply = client.chat.completions.create(model=name, messages=messages, max_tokens=64, extra_body=own)
    text, alone = answer_alone(checkpoint, {"messages": messages, "max_tokens": 64, **own})
    assert reply.model == name
    assert (reply.choices[0].message.content, reply.choices[0].finish_reason, reply.usage.completion_tokens,
            reply.usage.nfe) == (text, alone.finish_reason, len(alone.token_ids), alone.nfe)


@pytest.mark.parametrize("name, body, field", [
    (V2, {"steps_per_block": 8}, "steps_per_block"),  # LLaDA2.0's, on Fast-dLLM v2
    (V2, {"steps": 64}, "steps"),  # LLaDA's and Dream's
    (LLADA2, {"sub_block_length": 8}, "sub_block_length"),  # Fast-dLLM v2's, on LLaDA2.0
    (LLADA2, {"use_cache": False}, "use_cache"),
    (FATES, {"block_cache": True}, "block_cache"),  # Fast-dLLM v2's, on LLaDA
    (DREAM, {"steps_per_block": 8}, "steps_per_block"),  # LLaDA2.0's, on Dream
])
def test_a_field_of_one_family_is_refused_by_name_on_another(client, name, body, field):
    with pytest.raises(BadRequestError) as refused:
        client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}], extra_body=body)
    assert refused.value.body["param"] == field
