"""A Dream checkpoint served like LLaDA: `fastdllm-ray serve --model <dream dir>` (the tiny
embedded Dream), the official openai client, the chat template from the checkpoint, `alg` as
an extra body field (400 naming the field when bad or not for this family), concurrent
requests batched with each answer as alone, and the metrics exported under the model's name."""

from __future__ import annotations

import asyncio
import time

import pytest
from openai import AsyncOpenAI, BadRequestError, OpenAI

from fastdllm_ray import GenerationParams, generate, load_model, load_tokenizer
from fastdllm_ray.cli import build_parser
from fastdllm_ray.commands.serve import config_from_args
from serve_harness import replica_stats, running_app
from test_batching_and_metrics import scrape, total
from tests.conftest import TINY_DREAM

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

NAME = "tiny-dream"
QUESTION = [{"role": "user", "content": "What is 12+7?"}]
SETTINGS = [
    {"alg": "entropy", "block_length": 8, "steps": 16},
    {"alg": "maskgit_plus", "block_length": 8, "steps": 8, "use_dual_cache": False},
    {"alg": "topk_margin", "block_length": 16, "steps": 16, "use_cache": False},
    {"alg": "confidence_threshold", "threshold": 0.5, "block_length": 8, "steps": 16},
    {"threshold": 0.9, "block_length": 8, "steps": 16, "use_cache": False},
    {"block_length": 16, "steps": 8},
]


@pytest.fixture(scope="module")
def app():
    args = build_parser().parse_args(["serve", "--model", str(TINY_DREAM), "--name", NAME, "--max-num-seqs", "8"])
    with running_app(config_from_args(args)) as urls:
        yield urls


@pytest.fixture(scope="module")
def client(app) -> OpenAI:
    return OpenAI(base_url=f"{app[0]}/v1", api_key="unused", max_retries=0, timeout=120)


def chat_prompt():
    """The tokenizer and QUESTION's prompt ids under the checkpoint's chat template."""
    tokenizer = load_tokenizer(TINY_DREAM)
    prompt = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=True)
    if isinstance(prompt, dict) or hasattr(prompt, "input_ids"):
        prompt = prompt["input_ids"]
    return tokenizer, prompt


def test_chat_with_alg_answers_what_the_engine_answers_alone(client):
    reply = client.chat.completions.create(model=NAME, messages=QUESTION, max_tokens=16,
                                           extra_body={"alg": "entropy", "block_length": 8, "steps": 16})
    tokenizer, prompt = chat_prompt()
    alone = generate(load_model(TINY_DREAM), [prompt],
                     GenerationParams(gen_length=16, block_length=8, steps=16, alg="entropy"))[0]
    assert reply.usage.prompt_tokens == len(prompt)
    assert reply.usage.completion_tokens == len(alone.token_ids)
    assert reply.choices[0].message.content == tokenizer.decode(alone.token_ids, skip_special_tokens=True)


def test_top_p_and_top_k_answer_what_the_engine_answers_alone(client):
    reply = client.chat.completions.create(model=NAME, messages=QUESTION, max_tokens=16, top_p=0.6,
                                           extra_body={"top_k": 20, "block_length": 8, "steps": 16})
    tokenizer, prompt = chat_prompt()
    alone = generate(load_model(TINY_DREAM), [prompt],
                     GenerationParams(gen_length=16, block_length=8, steps=16, top_p=0.6, top_k=20))[0]
    assert reply.choices[0].message.content == tokenizer.decode(alone.token_ids, skip_special_tokens=True)


@pytest.mark.parametrize("body,field", [({"alg": "origin"}, "alg"), ({"remasking": "random"}, "remasking"),
                                        ({"factor": 1.0}, "factor"), ({"alg": "entropy", "threshold": 0.5}, "threshold"),
                                        ({"top_p": 1.5}, "top_p"), ({"top_k": 0}, "top_k")])
def test_bad_or_foreign_field_is_a_400_naming_it(client, body, field):
    with pytest.raises(BadRequestError) as caught:
        client.chat.completions.create(model=NAME, messages=QUESTION, max_tokens=8, extra_body=body)
    error = caught.value.body if "error" not in caught.value.body else caught.value.body["error"]
    assert error["param"] == field and error["message"].startswith(f"{field}:")


def test_concurrent_dream_requests_are_batched_and_each_answers_as_alone(app):
    client = AsyncOpenAI(base_url=f"{app[0]}/v1", api_key="unused", max_retries=0, timeout=180)
    requests = [{"prompt": f"{i}*{i + 3}=", **SETTINGS[i % len(SETTINGS)]} for i in range(12)]

    async def ask_all():
        return await asyncio.gather(*(client.completions.create(
            model=NAME, prompt=r["prompt"], max_tokens=16, extra_body={k: v for k, v in r.items() if k != "prompt"})
            for r in requests))

    replies = asyncio.run(ask_all())
    model, tokenizer = load_model(TINY_DREAM), load_tokenizer(TINY_DREAM)
    for request, reply in zip(requests, replies):
        cache = "none" if request.get("use_cache") is False else ("prefix" if "use_dual_cache" in request else "dual")
        params = GenerationParams(gen_length=16, block_length=request["block_length"], steps=request["steps"],
                                  alg=request.get("alg"), threshold=request.get("threshold"), cache=cache)
        alone = generate(model, [tokenizer(request["prompt"])["input_ids"]], params)[0]
        assert reply.choices[0].text == tokenizer.decode(alone.token_ids, skip_special_tokens=True), request
    assert replica_stats()["max_batch_size"] > 1


def test_metrics_carry_the_dream_model_name(app, client):
    deadline, samples = time.monotonic() + 60, {}
    while time.monotonic() < deadline:
        samples = scrape(app[1])
        if total(samples, "ray_fastdllm_nfe_total", model=NAME) > 0:
            break
        time.sleep(2)
    assert total(samples, "ray_fastdllm_nfe_total", model=NAME) > 0
    assert total(samples, "ray_fastdllm_generated_tokens_total", model=NAME) > 0
