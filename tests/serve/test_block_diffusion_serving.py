"""The block-diffusion families served like the others: `fastdllm-ray serve --model <dir>` on the
tiny Fast-dLLM v2 and LLaDA2.0 checkpoints (random weights, the real formats, their own
tokenizers and chat templates), the official openai client. Chat and completions answer what
the engine answers alone, batched with other requests; a stream sends each block as it becomes
final (v2: its carried ids too), and with `stream_steps` one chunk per forward whose commits add
up to the answer, in the rows of the family's blocks; the family's fields and
`generation_algorithm` names are taken, another family's fields refused with a 400 naming them;
usage counts the answer and its forwards; metrics carry the model's name."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI, BadRequestError, OpenAI

from alone import answer_alone, deltas_alone, engine_request, outputs_alone
from fastdllm_ray.cli import build_parser
from fastdllm_ray.commands.serve import config_from_args
from serve_harness import replica_stats, running_app, scrape, total
from tests.conftest import TINY_LLADA2, TINY_V2

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]

QUESTION = [{"role": "user", "content": "What is 12+7?"}]


@dataclass(frozen=True)
class Family:
    name: str  # served as
    checkpoint: Path
    family: str
    model_type: str
    settings: list[str]  # its own request fields, as /v1/models lists them
    own: list[dict]  # requests setting its fields
    foreign: list[tuple[dict, str]]  # another family's field, and the param the 400 names
    bad: list[tuple[dict, str]]  # a bad value of its own, and the param
    algorithms: dict[str, dict]  # generation_algorithm -> the fields it stands for
    default_algorithm: str


SHARED_FOREIGN = [({"steps": 32}, "steps"), ({"use_cache": True}, "use_cache"),
                  ({"use_dual_cache": False}, "use_cache"), ({"factor": 1.0}, "factor"),
                  ({"remasking": "random"}, "remasking"), ({"alg": "entropy"}, "alg")]
FAMILIES = {f.name: f for f in (
    Family("tiny-v2", TINY_V2, "Fast-dLLM v2", "Fast_dLLM_Qwen", ["block_cache", "sub_block_length", "top_p"],
           own=[{"threshold": 0.9, "sub_block_length": 8, "block_cache": True}, {"sub_block_length": 4},
                {"threshold": 0.5, "block_cache": False}, {"generation_algorithm": "block_cache", "threshold": 0.8},
                {"block_length": 16, "sub_block_length": 16}, {}],
           foreign=[*SHARED_FOREIGN, ({"top_k": 5}, "top_k"), ({"steps_per_block": 4}, "steps_per_block")],
           bad=[({"sub_block_length": 12}, "sub_block_length"), ({"threshold": 1.5}, "threshold"),
                ({"max_tokens": 16}, "max_tokens"), ({"generation_algorithm": "dual_cache"}, "generation_algorithm"),
                ({"generation_algorithm": "basic", "block_cache": True}, "generation_algorithm")],
           algorithms={"basic": {"block_cache": False}, "block_cache": {"block_cache": True}},
           default_algorithm="basic"),
    Family("tiny-llada2", TINY_LLADA2, "LLaDA2.0", "llada2_moe", ["steps_per_block", "top_k", "top_p"],
           own=[{"steps_per_block": 8}, {"threshold": 0.5, "steps_per_block": 4}, {"threshold": 1.0},
                {"block_length": 16, "steps_per_block": 16}, {"top_k": 5, "top_p": 0.9}, {}],
           foreign=[*SHARED_FOREIGN, ({"sub_block_length": 8}, "sub_block_length"),
                    ({"block_cache": True}, "block_cache")],
           bad=[({"steps_per_block": 0}, "steps_per_block"), ({"threshold": 0.0}, "threshold"),
                ({"generation_algorithm": "dual_cache"}, "generation_algorithm")],
           algorithms={"default": {}}, default_algorithm="default"),
)}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request) -> Family:
    return FAMILIES[request.param]


@pytest.fixture(scope="module")
def app(family):
    args = build_parser().parse_args(["serve", "--model", str(family.checkpoint), "--name", family.name,
                                      "--max-num-seqs", "8"])
    with running_app(config_from_args(args)) as urls:
        yield urls


@pytest.fixture(scope="module")
def client(app) -> OpenAI:
    return OpenAI(base_url=f"{app[0]}/v1", api_key="unused", max_retries=0, timeout=120)


def refusal(client: OpenAI, name: str, body: dict) -> dict:
    with pytest.raises(BadRequestError) as caught:
        client.chat.completions.create(model=name, messages=QUESTION, extra_body=body)
    return caught.value.body if "error" not in caught.value.body else caught.value.body["error"]


def test_models_lists_the_family_and_its_settings(client, family):
    [card] = client.models.list().data
    assert (card.id, card.model_extra["family"], card.model_extra["settings"]) == (
        family.name, family.family, family.settings)


def test_chat_answers_what_the_engine_answers_alone_with_real_usage(client, family):
    body = {"messages": QUESTION, **family.own[0]}
    reply = client.chat.completions.create(model=family.name, messages=QUESTION, extra_body=family.own[0])
    text, alone = answer_alone(family.checkpoint, body)
    prompt_tokens = len(engine_request(family.checkpoint, body).prompt_ids)
    assert reply.choices[0].message.content == text
    assert (reply.choices[0].finish_reason, reply.usage.nfe) == (alone.finish_reason, alone.nfe)
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt_tokens, len(alone.token_ids))
    assert reply.usage.total_tokens == prompt_tokens + len(alone.token_ids)


def test_concurrent_completions_are_batched_and_each_answers_as_alone(app, family):
    client = AsyncOpenAI(base_url=f"{app[0]}/v1", api_key="unused", max_retries=0, timeout=180)
    bodies = [{"prompt": f"{i}*{i + 3}=", "max_tokens": 48, **family.own[i % len(family.own)]} for i in range(12)]

    async def ask_all():
        return await asyncio.gather(*(client.completions.create(
            model=family.name, prompt=b["prompt"], max_tokens=b["max_tokens"],
            extra_body={k: v for k, v in b.items() if k not in ("prompt", "max_tokens")}) for b in bodies))

    replies = asyncio.run(ask_all())
    reasons = set()
    for body, reply in zip(bodies, replies):
        text, alone = answer_alone(family.checkpoint, body)
        assert (reply.choices[0].text, reply.usage.completion_tokens, reply.usage.nfe) == (
            text, len(alone.token_ids), alone.nfe), body
        assert reply.choices[0].finish_reason == alone.finish_reason
        reasons.add(alone.finish_reason)
    assert replica_stats()["max_batch_size"] > 1
    if family.name == "tiny-llada2":  # its tiny model ends some answers early: usage counts up to the end token
        assert reasons == {"stop", "length"}


def test_a_stream_sends_each_block_as_it_becomes_final(client, family):
    body = {"messages": QUESTION, **family.own[0]}
    chunks = list(client.chat.completions.create(model=family.name, messages=QUESTION, stream=True,
                                                 stream_options={"include_usage": True}, extra_body=family.own[0]))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices][1:]  # after the role chunk
    assert deltas == deltas_alone(family.checkpoint, body)
    text, alone = answer_alone(family.checkpoint, body)
    assert "".join(deltas) == text and chunks[-1].usage.completion_tokens == len(alone.token_ids)
    # what the engine hands back, block by block: the first block holds the prompt's tail
    groups = [len(o.token_ids) for o in outputs_alone(family.checkpoint, body) if o.token_ids]
    tail = len(engine_request(family.checkpoint, body).prompt_ids) % 32
    if family.name == "tiny-v2":  # a block, then the id its last position carries into the next
        assert groups == [32 - tail, 1, 31, 1]
    else:
        assert groups == [32 - tail, 32, 64 - (32 - tail) - 32]


def test_stream_steps_add_up_to_the_answer_in_the_rows_of_its_blocks(client, family):
    body = {"messages": QUESTION, **family.own[0]}
    chunks = list(client.chat.completions.create(
        model=family.name, messages=QUESTION, stream=True, stream_options={"include_usage": True},
        extra_body={**family.own[0], "stream_steps": True}))
    steps = [c.model_extra["step"] for c in chunks if "step" in c.model_extra]
    alone = outputs_alone(family.checkpoint, body, stream_steps=True)
    result = alone[-1].result
    assert len(steps) == chunks[-1].usage.nfe == result.nfe  # one per forward
    committed = {c["position"]: c["token_id"] for s in steps for c in s["commits"]}
    assert [committed[i] for i in range(len(result.token_ids))] == result.token_ids
    rows = [(s["row_start"], s["row_cells"], s["answer_cells"]) for s in steps]
    assert rows == [(o.step.row_start, o.step.row_cells, o.step.answer_cells) for o in alone]
    assert all(s["row_start"] <= c["position"] < s["row_start"] + s["row_cells"] for s in steps for c in s["commits"])
    text_deltas = [c.choices[0].delta.content for c in chunks if c.choices and "step" not in c.model_extra][1:]
    assert text_deltas == deltas_alone(family.checkpoint, body)  # the text chunks are as without steps


def test_max_tokens_counts_as_the_family_counts_it(client, family):
    body = {"messages": QUESTION, "max_tokens": 40}
    reply = client.chat.completions.create(model=family.name, messages=QUESTION, max_tokens=40)
    tail = len(engine_request(family.checkpoint, body).prompt_ids) % 32
    assert reply.choices[0].finish_reason == "length"
    if family.name == "tiny-v2":  # one block of 32 (the first holding the prompt's tail), then its carried id
        assert reply.usage.completion_tokens == 40 // 32 * 32 - tail + 1
    else:
        assert reply.usage.completion_tokens == 40


def test_the_familys_generation_algorithms_are_taken_and_listed(client, app, family):
    for name, fields in family.algorithms.items():
        body = {"messages": QUESTION, "generation_algorithm": name}
        reply = client.chat.completions.create(model=family.name, messages=QUESTION,
                                               extra_body={"generation_algorithm": name})
        assert reply.choices[0].message.content == answer_alone(family.checkpoint, {"messages": QUESTION, **fields})[0]
        assert engine_request(family.checkpoint, body).params.set_fields() == fields
    listed = httpx.get(f"{app[0]}/generation/algorithms", timeout=30).json()["algorithms"]
    assert [(a["name"], a["default"], a["model"]) for a in listed] == [
        (name, name == family.default_algorithm, family.name) for name in family.algorithms]
    health = httpx.get(f"{app[0]}/health", timeout=30).json()
    assert (health["model_type"], health["default_algorithm"]) == (family.model_type, family.default_algorithm)


def test_another_familys_field_is_a_400_naming_it(client, family):
    for body, param in family.foreign:
        error = refusal(client, family.name, body)
        assert error["param"] == param, body
        assert f"not to {family.family}" in error["message"], error


def test_a_bad_value_is_a_400_naming_the_field(client, family):
    for body, param in family.bad:
        error = refusal(client, family.name, body)
        assert error["param"] == param, (body, error)


def test_metrics_carry_the_models_name(app, client, family):
    deadline, samples = time.monotonic() + 60, {}
    while time.monotonic() < deadline:
        samples = scrape(app[1])
        if total(samples, "ray_fastdllm_nfe_total", model=family.name) > 0:
            break
        time.sleep(2)
    assert total(samples, "ray_fastdllm_nfe_total", model=family.name) > 0
    assert total(samples, "ray_fastdllm_generated_tokens_total", model=family.name) > 0
