"""Every malformed or out-of-range request gets a 400 OpenAI error naming the field, oversized
bodies 413, missing or wrong keys 401, overload 503 with Retry-After: never a 500, never a
hang, and the server keeps answering afterwards."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from fastdllm_ray.model.shipped import DEFAULT_MODEL_NAME
from fastdllm_ray.serve.config import AppConfig
from serve_harness import replica_stats, running_app

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

KEYS = ["key-one", "key-two"]
AUTH = {"Authorization": f"Bearer {KEYS[1]}"}
MODEL = DEFAULT_MODEL_NAME
USER = [{"role": "user", "content": "2+2?"}]


@pytest.fixture(scope="module")
def base_url():
    # a small engine (2 slots, 2 queued) that Serve may hand 8 requests at once, 4 more queued
    config = AppConfig(api_keys=KEYS, engine={"max_num_seqs": 2, "max_queue": 2},
                       max_ongoing_requests=8, max_queued_requests=4)
    with running_app(config) as (url, _):
        yield url


def chat(**fields) -> dict:
    return {"model": MODEL, "messages": USER, "max_tokens": 8, "block_length": 8, "steps": 8, **fields}


BAD_CHAT = [  # (body, the field the error must name; None = the body as a whole)
    (b"{not json", None),
    (b"", None),
    (b"[1, 2]", None),
    (json.dumps({"messages": USER}).encode(), "model"),
    (json.dumps({"model": MODEL}).encode(), "messages"),
    (json.dumps(chat(messages=[])).encode(), "messages"),
    (json.dumps(chat(messages="hi")).encode(), "messages"),
    (json.dumps(chat(messages=[{"role": "user"}])).encode(), "messages.0.content"),
    (json.dumps(chat(messages=[{"role": "user", "content": 5}])).encode(), "messages.0.content"),
    (json.dumps(chat(messages=[{"role": "wizard", "content": "x"}])).encode(), "messages.0.role"),
    (json.dumps(chat(model="gpt-4")).encode(), "model"),
    (json.dumps(chat(max_tokens=0)).encode(), "max_tokens"),
    (json.dumps(chat(max_tokens=-3)).encode(), "max_tokens"),
    (json.dumps(chat(max_tokens=10**9)).encode(), "max_tokens"),
    (json.dumps(chat(max_tokens="8")).encode(), "max_tokens"),
    (json.dumps(chat(max_tokens=8.5)).encode(), "max_tokens"),
    (json.dumps(chat(max_tokens=400, steps=400, messages=[{"role": "user", "content": "9" * 300}])).encode(), "messages"),
    (json.dumps(chat(threshold=0)).encode(), "threshold"),
    (json.dumps(chat(threshold=1.01)).encode(), "threshold"),
    (json.dumps(chat(factor=0)).encode(), "factor"),
    (json.dumps(chat(steps=0)).encode(), "steps"),
    (json.dumps(chat(steps=1, max_tokens=32)).encode(), "steps"),
    (json.dumps(chat(block_length=0)).encode(), "block_length"),
    (json.dumps(chat(block_length=10**7)).encode(), "block_length"),
    (json.dumps(chat(temperature=-1)).encode(), "temperature"),
    (b'{"model": "%s", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}' % MODEL.encode(),
     "temperature"),
    (b'{"model": "%s", "messages": [{"role": "user", "content": "x"}], "threshold": Infinity}' % MODEL.encode(),
     "threshold"),
    (json.dumps(chat(remasking="sideways")).encode(), "remasking"),
    (json.dumps(chat(use_cache="yes")).encode(), "use_cache"),
    (json.dumps(chat(stream="true")).encode(), "stream"),
    (json.dumps(chat(stop=["a", "b", "c", "d", "e"])).encode(), "stop"),
    (json.dumps(chat(n=3)).encode(), "n"),
    (json.dumps(chat(top_p=0.0)).encode(), "top_p"),
    (json.dumps(chat(top_k=0)).encode(), "top_k"),
    (json.dumps(chat(alg="entropy")).encode(), "alg"),  # Dream's; the shipped model is a LLaDA
    (json.dumps(chat(cfg_scale=2.0)).encode(), "cfg_scale"),
    (json.dumps(chat(generation_algorithm="fastest")).encode(), "generation_algorithm"),
    (json.dumps(chat(frobnicate=True)).encode(), "frobnicate"),
]


@pytest.mark.parametrize("body, param", BAD_CHAT, ids=[f"{i}-{p}" for i, (_, p) in enumerate(BAD_CHAT)])
def test_bad_chat_request_gets_400_naming_the_field(base_url, body, param):
    reply = httpx.post(f"{base_url}/v1/chat/completions", content=body, timeout=30,
                       headers={**AUTH, "Content-Type": "application/json"})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param


@pytest.mark.parametrize("fields, param", [
    ({"prompt": ""}, "prompt"),
    ({"prompt": ["a", "b"]}, "prompt"),
    ({"prompt": [5, 101]}, "prompt"),  # 101: the mask token's id
    ({"prompt": [5, 10**6]}, "prompt"),
    ({"prompt": "x" * 600}, "prompt"),
])
def test_bad_completion_prompt_gets_400(base_url, fields, param):
    reply = httpx.post(f"{base_url}/v1/completions", headers=AUTH, timeout=30,
                       json={"model": MODEL, "max_tokens": 8, "block_length": 8, "steps": 8, **fields})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param


def test_oversized_body_gets_413(base_url):
    huge = json.dumps(chat(messages=[{"role": "user", "content": "x" * (2 << 20)}]))
    reply = httpx.post(f"{base_url}/v1/chat/completions", content=huge, headers=AUTH, timeout=30)
    assert reply.status_code == 413 and "exceeds" in reply.json()["error"]["message"]


def test_missing_or_wrong_key_gets_401_and_health_stays_open(base_url):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEYS[0]}):
        reply = httpx.post(f"{base_url}/v1/chat/completions", json=chat(), headers=headers, timeout=30)
        assert reply.status_code == 401 and reply.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{base_url}/v1/models", timeout=30).status_code == 401
    assert httpx.get(f"{base_url}/health", timeout=30).status_code == 200
    ok = httpx.post(f"{base_url}/v1/chat/completions", json=chat(), timeout=60,
                    headers={"Authorization": f"Bearer {KEYS[0]}"})
    assert ok.status_code == 200


def test_metrics_needs_no_key_like_health(base_url):
    reply = httpx.get(f"{base_url}/metrics", timeout=30)  # Prometheus scrapes without a secret (README "Metrics")
    assert reply.status_code == 200 and "fastdllm_metrics_exporter_up{" in reply.text


def test_overload_is_refused_with_503_and_retry_after_never_a_hang(base_url):
    slow = chat(max_tokens=128, block_length=32, steps=128, use_cache=False)

    async def one(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(f"{base_url}/v1/chat/completions", json=slow, headers=AUTH)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=180) as client:
            return await asyncio.gather(*(one(client) for _ in range(24)))

    replies = asyncio.run(burst())
    codes = [r.status_code for r in replies]
    assert set(codes) <= {200, 503}, codes
    refused = [r for r in replies if r.status_code == 503]
    assert refused and codes.count(200) >= 2  # both engine slots answered
    assert all(r.headers.get("retry-after") and "overloaded" in r.json()["error"]["message"] for r in refused)


def test_client_leaving_mid_stream_cancels_its_engine_work(base_url):
    before = replica_stats()["finished"].get("cancelled", 0)
    slow = chat(max_tokens=256, block_length=32, steps=256, use_cache=False, stream=True)
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=slow, headers=AUTH, timeout=60) as reply:
        assert reply.status_code == 200
        next(reply.iter_lines())  # admitted and streaming; now the client goes away
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = replica_stats()
        if stats["finished"].get("cancelled", 0) > before and stats["running"] == 0:
            break
        time.sleep(0.2)
    assert stats["finished"].get("cancelled", 0) == before + 1 and stats["running"] == 0


def test_server_is_healthy_after_all_of_it(base_url):
    assert httpx.get(f"{base_url}/health", timeout=30).status_code == 200
    reply = httpx.post(f"{base_url}/v1/chat/completions", json=chat(), headers=AUTH, timeout=60)
    assert reply.status_code == 200 and reply.json()["choices"][0]["finish_reason"] in ("stop", "length")
