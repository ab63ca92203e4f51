"""A drop-in for the LLaDA OpenAI server (NeMo-RL's xp/llada_api/llada_openai_server.py): our
app, started as `fastdllm-ray serve --name tiny-llada-arith --name llada-8b-instruct`, driven
with what that server's integration test (tests/test_fast_dllm_integration.py) and the
NeMo-Skills eval beside it (xp/nemo-skills/eval_llada.py, through NeMo-Skills' OpenAI model:
its fields as the official openai client sends them, the diffusion ones in extra_body) send,
and answering what they read."""

from __future__ import annotations

import httpx
import pytest
from openai import BadRequestError, OpenAI

from fastdllm_ray.cli import build_parser
from fastdllm_ray.commands.serve import config_from_args
from fastdllm_ray.model.shipped import DEFAULT_MODEL_NAME
from serve_harness import replica_stats, running_app

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

SEED_NAME = "llada-8b-instruct"  # what the seed's clients send, whatever checkpoint is loaded
MESSAGE = {"model": SEED_NAME, "messages": [{"role": "user", "content": "What is 2 + 2?"}], "temperature": 0.0}
# the integration test's five configurations, as it posts them (with `requests`)
SEED_CONFIGS = [
    {"generation_algorithm": "basic", "steps": 64, "block_length": 32, "max_tokens": 64},
    {"generation_algorithm": "prefix_cache", "steps": 64, "block_length": 32, "max_tokens": 64},
    {"generation_algorithm": "dual_cache", "steps": 64, "block_length": 32, "max_tokens": 64},
    {"generation_algorithm": "dual_cache", "threshold": 0.8, "steps": 64, "block_length": 32, "max_tokens": 64},
    {"generation_algorithm": "dual_cache", "factor": 2.0, "steps": 64, "block_length": 32, "max_tokens": 64},
]
# eval_llada.py's defaults (temperature 0.7, top_p 0.95, top_k -1 held back by NeMo-Skills), with
# --tokens-to-generate 64 (its 512 is the whole context of the shipped model)
NEMO_SKILLS_EXTRA_BODY = {"steps": 128, "block_length": 32, "cfg_scale": 0.0, "remasking": "low_confidence",
                          "use_cache": True, "use_dual_cache": True}
# what NeMo-Skills' OpenAI model puts in every chat request besides (its repetition_penalty 1.0
# travels as presence_penalty); the openai client sends its None values as null
NEMO_SKILLS_FIELDS = dict(seed=0, stop=None, stream=False, presence_penalty=1.0, logprobs=False, top_logprobs=None,
                          temperature=0.7, top_p=0.95, timeout=120)


@pytest.fixture(scope="module")
def base_url():
    args = build_parser().parse_args(["serve", "--name", DEFAULT_MODEL_NAME, "--name", SEED_NAME,
                                      "--max-num-seqs", "4", "--max-queue", "8"])
    with running_app(config_from_args(args)) as (url, _):
        yield url


@pytest.fixture(scope="module")
def client(base_url) -> OpenAI:
    return OpenAI(base_url=f"{base_url}/v1", api_key="EMPTY", max_retries=0, timeout=120)


def test_health_answers_the_seed_servers_fields(base_url):
    reply = httpx.get(f"{base_url}/health", timeout=30)
    health = reply.json()
    assert reply.status_code == 200 and health["status"] == "healthy"
    assert (health["model_loaded"], health["device"], health["model_type"]) == (True, "cpu", "llada")
    assert health["available_generation_algorithms"] == ["basic", "prefix_cache", "dual_cache"]
    assert health["default_algorithm"] == "dual_cache"
    [model] = health["models"]
    assert (model["name"], model["aliases"], model["model_loaded"]) == (DEFAULT_MODEL_NAME, [SEED_NAME], True)


def test_generation_algorithms_lists_each_with_description_and_availability(base_url):
    algorithms = httpx.get(f"{base_url}/generation/algorithms", timeout=30).json()["algorithms"]
    assert [a["name"] for a in algorithms] == ["basic", "prefix_cache", "dual_cache"]
    assert all(a["available"] is True and a["description"] and a["model"] == DEFAULT_MODEL_NAME for a in algorithms)
    assert [a["aliases"] for a in algorithms] == [["no_cache", "simple"], ["prefix", "cache"], ["dual", "double_cache"]]
    assert [a["default"] for a in algorithms] == [False, False, True]


def test_models_lists_every_name_and_an_unknown_one_is_refused_listing_them(client):
    assert [m.id for m in client.models.list()] == [DEFAULT_MODEL_NAME, SEED_NAME]
    with pytest.raises(BadRequestError) as refused:
        client.chat.completions.create(model="llada-1.5", messages=MESSAGE["messages"], max_tokens=8)
    error = refused.value.body
    assert error["code"] == "model_not_found"
    assert SEED_NAME in error["message"] and DEFAULT_MODEL_NAME in error["message"]


@pytest.mark.parametrize("config", SEED_CONFIGS, ids=["basic", "prefix", "dual", "threshold", "factor"])
def test_the_seed_integration_tests_requests_answer(base_url, config):
    reply = httpx.post(f"{base_url}/v1/chat/completions", json={**MESSAGE, **config}, timeout=60)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert isinstance(answer["choices"][0]["message"]["content"], str) and answer["model"] == SEED_NAME
    assert 0 < answer["usage"]["completion_tokens"] <= 64


@pytest.mark.parametrize("name, flags, kind", [
    ("basic", {"use_cache": False}, "full"), ("cache", {"use_dual_cache": False}, "prefix"),
    ("double_cache", {"use_cache": True}, "dual")])
def test_an_algorithm_runs_its_caches_forwards_as_the_cache_fields_do(base_url, name, flags, kind):
    def ask(fields: dict) -> tuple[dict, dict]:
        before = replica_stats()["forwards"]
        body = {**MESSAGE, "steps": 64, "block_length": 32, "max_tokens": 64, **fields}
        answer = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=60).json()
        after = replica_stats()["forwards"]
        return answer, {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}

    by_name, forwards = ask({"generation_algorithm": name})
    by_flags, flag_forwards = ask(flags)
    assert forwards == flag_forwards and kind in forwards
    assert set(forwards) <= {"full", kind}  # a cache's steps, and the full forwards that refresh it
    assert by_name["choices"][0]["message"]["content"] == by_flags["choices"][0]["message"]["content"]
    assert by_name["usage"] == by_flags["usage"]


@pytest.mark.parametrize("era", ["openai-client", "litellm"])
def test_nemo_skills_chat_requests_answer(client, era):
    extra_body = dict(NEMO_SKILLS_EXTRA_BODY)
    fields = dict(NEMO_SKILLS_FIELDS)
    if era == "litellm":  # newer NeMo-Skills: litellm drops the None values; max_completion_tokens; the
        # NeMo-RL patch's generation_algorithm in extra_body
        fields = {k: v for k, v in fields.items() if v is not None}
        fields["max_completion_tokens"] = 64
        extra_body["generation_algorithm"] = "dual_cache"
    else:
        fields["max_tokens"] = 64
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 23+58?"}]
    reply = client.chat.completions.create(model=SEED_NAME, messages=messages, extra_body=extra_body, **fields)
    assert reply.model == SEED_NAME and isinstance(reply.choices[0].message.content, str)
    assert 0 < reply.usage.completion_tokens <= 64 and reply.choices[0].finish_reason in ("stop", "length")


def test_nemo_skills_streamed_chat_arrives_by_block(client):
    fields = {**NEMO_SKILLS_FIELDS, "stream": True, "temperature": 0.0}
    chunks = list(client.chat.completions.create(model=SEED_NAME, messages=MESSAGE["messages"], max_tokens=64,
                                                 extra_body=NEMO_SKILLS_EXTRA_BODY, **fields))
    text = [c.choices[0].delta.content for c in chunks[1:]]
    assert chunks[-1].choices[0].finish_reason in ("stop", "length") and 1 <= len(text) <= 2  # 64 tokens: 2 blocks


def test_top_p_and_top_k_change_nothing_at_temperature_zero(client):
    def ask(**extra) -> str:
        return client.chat.completions.create(model=SEED_NAME, messages=MESSAGE["messages"], max_tokens=32,
                                              temperature=0.0, extra_body={"block_length": 8, "steps": 32, **extra}
                                              ).choices[0].message.content

    assert ask(top_p=0.5, top_k=2) == ask(top_k=-1) == ask()


@pytest.mark.parametrize("extra, param, words", [
    ({"cfg_scale": 1.5}, "cfg_scale", "classifier-free guidance"),
    ({"generation_algorithm": "dinfer_blockwise"}, "generation_algorithm", "double_cache"),
    ({"generation_algorithm": "basic", "use_cache": True}, "generation_algorithm", "use_cache"),
    ({"presence_penalty": 0.5}, "presence_penalty", "not supported"),
    ({"logprobs": True}, "logprobs", "not available"),
    ({"repetition_penalty": 1.0}, "repetition_penalty", "not permitted"),
])
def test_what_we_cannot_honour_is_a_400_naming_the_field(client, extra, param, words):
    with pytest.raises(BadRequestError) as refused:
        client.chat.completions.create(model=SEED_NAME, messages=MESSAGE["messages"], max_tokens=8, extra_body=extra)
    error = refused.value.body
    assert error["param"] == param and error["message"].startswith(param) and words in error["message"]
