"""The official openai client against the app as `fastdllm-ray serve` starts it (shipped
model, CLI flags -> AppConfig -> build_app): chat and completions, streaming and not."""

from __future__ import annotations

import math

import httpx
import pytest
from openai import BadRequestError, OpenAI

from fastdllm_ray import load_tokenizer
from fastdllm_ray.cli import build_parser
from fastdllm_ray.commands.serve import config_from_args
from fastdllm_ray.model.config import LLaDAConfig
from fastdllm_ray.model.shipped import DEFAULT_MODEL_NAME, default_model_path
from fastdllm_ray.serve.convert import PromptEncoder
from fastdllm_ray.serve.protocol import ChatMessage
from serve_harness import running_app

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

QUESTION = [{"role": "user", "content": "What is 12+7?"}]
FAST = {"block_length": 8, "steps": 32}  # 32 tokens in 4 blocks: quick on a CPU


@pytest.fixture(scope="module")
def base_url():
    args = build_parser().parse_args(["serve", "--max-num-seqs", "4", "--max-queue", "8"])
    with running_app(config_from_args(args)) as (url, _):
        yield url


@pytest.fixture(scope="module")
def client(base_url) -> OpenAI:
    return OpenAI(base_url=f"{base_url}/v1", api_key="not-needed", max_retries=0, timeout=120)


def test_health_and_models_list_the_shipped_model(base_url, client):
    health = httpx.get(f"{base_url}/health").json()
    assert (health["status"], health["model_loaded"], health["models"][0]["name"]) == ("healthy", True,
                                                                                      DEFAULT_MODEL_NAME)
    assert [m.id for m in client.models.list()] == [DEFAULT_MODEL_NAME]


def test_chat_completion_answers_with_usage(client):
    reply = client.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=QUESTION, max_tokens=32,
                                           extra_body=FAST)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert 0 < reply.usage.completion_tokens <= 32 and reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_llada_answers_report_no_cached_prompt_tokens_even_for_a_repeated_prompt(client):
    # OpenAI's prompt_tokens_details.cached_tokens is on every usage; a LLaDA prompt's K/V depend on
    # the whole canvas, so nothing is ever taken from another request (README: Prefix sharing)
    for _ in range(2):
        reply = client.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=QUESTION, max_tokens=32,
                                               extra_body=FAST)
        assert reply.usage.prompt_tokens_details.cached_tokens == 0
    *_, usage = client.completions.create(model=DEFAULT_MODEL_NAME, prompt="3*4=", max_tokens=16, extra_body=FAST,
                                          stream=True, stream_options={"include_usage": True})
    assert usage.usage.prompt_tokens_details.cached_tokens == 0


def test_chat_stream_sends_one_chunk_per_block_and_the_same_text(client):
    whole = client.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=QUESTION, max_tokens=32,
                                           extra_body=FAST)
    chunks = list(client.chat.completions.create(
        model=DEFAULT_MODEL_NAME, messages=QUESTION, max_tokens=32, extra_body=FAST, stream=True,
        stream_options={"include_usage": True}))
    role, *blocks, usage = chunks
    assert role.choices[0].delta.role == "assistant"
    assert len(blocks) == math.ceil(usage.usage.completion_tokens / FAST["block_length"])
    assert [c.choices[0].finish_reason for c in blocks][:-1] == [None] * (len(blocks) - 1)
    assert blocks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert "".join(c.choices[0].delta.content for c in blocks) == whole.choices[0].message.content
    assert usage.choices == [] and usage.usage.completion_tokens == whole.usage.completion_tokens


def test_completion_streamed_and_whole_agree(client):
    settings = dict(model=DEFAULT_MODEL_NAME, prompt="3*4=", max_tokens=16, extra_body=FAST)
    whole = client.completions.create(**settings)
    streamed = list(client.completions.create(**settings, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == whole.choices[0].text
    assert streamed[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert whole.usage.completion_tokens > 0


def test_stop_string_cuts_the_answer(client):
    # a completion prompt in the chat format the model was trained on, as token ids (it answers a bare
    # "3*4=" with its end token; a text prompt's special-token spellings stay plain text)
    tokenizer = load_tokenizer(default_model_path())
    prompt = tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": "What is 3*4?"}], tokenize=False,
                                                     add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    settings = dict(model=DEFAULT_MODEL_NAME, prompt=prompt, max_tokens=32, extra_body=FAST)
    full = client.completions.create(**settings).choices[0].text
    assert full, "the model must answer with some text for this test to mean anything"
    stop = full[-1]
    cut = client.completions.create(**settings, stop=[stop]).choices[0]
    assert cut.text == full[: full.index(stop)] and cut.finish_reason == "stop"
    streamed = list(client.completions.create(**settings, stop=[stop], stream=True))
    assert "".join(c.choices[0].text for c in streamed) == cut.text


def test_ignore_eos_decodes_every_block_up_to_max_tokens(client):
    settings = dict(model=DEFAULT_MODEL_NAME, messages=QUESTION, max_tokens=32)
    stopped = client.chat.completions.create(**settings, extra_body=FAST)
    assert stopped.choices[0].finish_reason == "stop" and stopped.usage.completion_tokens < 32
    full = client.chat.completions.create(**settings, extra_body={**FAST, "ignore_eos": True})
    assert full.choices[0].finish_reason == "length" and full.usage.completion_tokens == 32
    assert full.choices[0].message.content.startswith(stopped.choices[0].message.content)
    with pytest.raises(BadRequestError, match="ignore_eos"):
        client.chat.completions.create(**settings, extra_body={**FAST, "ignore_eos": "yes"})


def test_text_spelling_the_mask_token_reaches_the_engine_as_plain_text(client):
    spelled = "<|mdm_mask|><|eot_id|> 1+1"
    reply = client.chat.completions.create(model=DEFAULT_MODEL_NAME, max_tokens=8, extra_body=FAST,
                                           messages=[{"role": "user", "content": spelled}])
    # the engine refuses any prompt holding the mask id, so a 200 means it was not there;
    # the ids the engine got are those of the ingress's encoder, counted in usage:
    config = LLaDAConfig.from_file(default_model_path() / "config.json")
    encoder = PromptEncoder(load_tokenizer(default_model_path()), config.embedding_size, config.mask_token_id)
    ids = encoder.chat([ChatMessage(role="user", content=spelled)])
    assert config.mask_token_id not in ids and reply.usage.prompt_tokens == len(ids)
    with pytest.raises(BadRequestError) as refused:  # the same token as an id is refused
        client.completions.create(model=DEFAULT_MODEL_NAME, prompt=[17, config.mask_token_id], max_tokens=8)
    assert refused.value.body["param"] == "prompt"
