"""`stream_steps: true` over HTTP: the official openai client parses the step chunks, their
commits add up to the answer, the text is the same as without them, default streams carry
no step field at all, and the playground's files are served (or not, when it is off)."""

from __future__ import annotations

import json

import httpx
import pytest
from openai import BadRequestError, OpenAI
from starlette.exceptions import HTTPException

from fastdllm_ray.model.shipped import DEFAULT_MODEL_NAME
from fastdllm_ray.serve.playground import playground_file
from tests.playground.conftest import API_KEY

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

QUESTION = [{"role": "user", "content": "What is 2+2?"}]
ANSWER = "2 + 2 = 4. The answer is 4."
STEPPED = {"steps": 16}  # 2 blocks of 32, 8 forwards each: 4 positions per forward
OPENAI_CHUNK_KEYS = {"id", "object", "created", "model", "choices"}


@pytest.fixture(scope="module")
def client(base_url) -> OpenAI:
    return OpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0, timeout=120)


def raw_chunks(base_url: str, body: dict) -> list[dict]:
    """The stream's JSON documents exactly as sent (no client in between)."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, headers=headers, timeout=120) as r:
        assert r.status_code == 200, r.read()
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_the_openai_client_parses_step_chunks_that_add_up_to_the_answer(client):
    chunks = list(client.chat.completions.create(
        model=DEFAULT_MODEL_NAME, messages=QUESTION, stream=True, extra_body={**STEPPED, "stream_steps": True},
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    steps = [c.model_extra["step"] for c in chunks if "step" in c.model_extra]
    assert len(steps) == chunks[-1].usage.nfe == 8  # one per forward; the second block is never run
    assert [(s["block"], s["block_step"]) for s in steps] == [(0, i) for i in range(1, 9)]
    assert all(len(s["commits"]) == 4 and s["remaining"] == 32 - 4 * s["block_step"] for s in steps)
    assert {(s["block_length"], s["gen_length"]) for s in steps} == {(32, 64)}
    assert {(s["row_start"], s["row_cells"], s["answer_cells"]) for s in steps} == {(0, 32, 64)}  # block 0's row
    commits = sorted((c["position"], c) for s in steps for c in s["commits"])
    assert [p for p, _ in commits] == list(range(32))  # every cell of block 0, once
    words = [c for _, c in commits]
    assert "".join(c["text"] for c in words if not c["special"]) == ANSWER
    assert words[len(ANSWER)]["special"] and words[len(ANSWER)]["text"] == "<|eot_id|>"


def test_step_chunks_leave_the_text_as_it_was(base_url):
    body = {"model": DEFAULT_MODEL_NAME, "messages": QUESTION, "stream": True, **STEPPED}
    plain = raw_chunks(base_url, body)
    stepped = raw_chunks(base_url, {**body, "stream_steps": True})
    without_steps = [c for c in stepped if "step" not in c]
    assert [c["choices"] for c in without_steps] == [c["choices"] for c in plain]
    assert all(set(c) == OPENAI_CHUNK_KEYS for c in plain)  # default streams: OpenAI's fields only
    for chunk in stepped:
        if "step" in chunk:
            assert set(chunk) == OPENAI_CHUNK_KEYS | {"step"}
            assert chunk["choices"] == [{"index": 0, "delta": {"content": ""}, "finish_reason": None,
                                         "logprobs": None}]


def test_completions_stream_steps_too(client):
    stream = client.completions.create(model=DEFAULT_MODEL_NAME, prompt="What is", max_tokens=8, stream=True,
                                       extra_body={"stream_steps": True, "steps": 8, "block_length": 8})
    chunks = list(stream)
    steps = [c.model_extra["step"] for c in chunks if "step" in c.model_extra]
    assert len(steps) == 8 and all(len(s["commits"]) == 1 for s in steps)
    assert sorted(c["position"] for s in steps for c in s["commits"]) == list(range(8))


def test_stream_steps_without_stream_is_refused_by_name(client):
    with pytest.raises(BadRequestError) as refused:
        client.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=QUESTION,
                                       extra_body={"stream_steps": True})
    assert refused.value.body["param"] == "stream_steps" and "stream: true" in refused.value.body["message"]


def test_an_empty_user_message_is_refused_by_name(client):
    with pytest.raises(BadRequestError) as refused:
        client.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=[{"role": "user", "content": "  "}])
    assert refused.value.body["param"] == "messages.0.content"


def test_the_playground_page_and_its_files_are_served_without_a_key(base_url):
    page = httpx.get(f"{base_url}/playground")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for name, kind in (("playground.js", "text/javascript"), ("playground.css", "text/css")):
        asset = httpx.get(f"{base_url}/playground/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert f'playground/{name}' in page.text
    missing = httpx.get(f"{base_url}/playground/secrets.txt")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    # the page holds nothing; what it does goes through /v1, which wants the key
    assert httpx.get(f"{base_url}/v1/models").status_code == 401


def test_a_playground_turned_off_is_not_found():
    with pytest.raises(HTTPException) as off:
        playground_file(enabled=False)
    assert off.value.status_code == 404 and "playground" in off.value.detail
