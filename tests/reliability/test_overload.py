"""Overload at four times what the server holds at once: every request gets a full answer or
a 429/503 refusal with Retry-After, within the timeout (none hangs); clients that leave free
their engine slots; the server is healthy afterwards."""

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

ONGOING, QUEUED = 4, 2  # the replica holds 4 (2 live + 2 in the engine queue), Serve queues 2 more
CAPACITY = ONGOING + QUEUED
CLIENTS = 4 * CAPACITY
REQUEST_TIMEOUT_S = 60.0
CLIENT_TIMEOUT_S = REQUEST_TIMEOUT_S + 30  # a reply later than this is a hang
USER = [{"role": "user", "content": "12+30="}]


@pytest.fixture(scope="module")
def base_url():
    config = AppConfig(engine={"max_num_seqs": 2, "max_queue": 2}, max_ongoing_requests=ONGOING,
                       max_queued_requests=QUEUED, request_timeout_s=REQUEST_TIMEOUT_S)
    with running_app(config) as (url, _):
        yield url


def body(stream: bool, **fields) -> dict:
    return {"model": DEFAULT_MODEL_NAME, "messages": USER, "max_tokens": 32, "block_length": 8, "steps": 32,
            "stream": stream, **fields}


def check_refusal(status: int, headers: httpx.Headers, payload: dict) -> None:
    assert status in (429, 503), (status, payload)
    assert int(headers["retry-after"]) >= 1
    error = payload["error"]
    assert error["message"] and error["type"] and "code" in error and "param" in error


async def one_request(client: httpx.AsyncClient, url: str, stream: bool) -> str:
    """'ok' for a full answer, 'refused' for a well-formed refusal; anything else fails here."""
    start = time.monotonic()
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body(stream)) as reply:
        raw = await reply.aread()
    assert time.monotonic() - start < CLIENT_TIMEOUT_S
    if reply.status_code != 200:
        check_refusal(reply.status_code, reply.headers, json.loads(raw))
        return "refused"
    if not stream:
        assert json.loads(raw)["choices"][0]["finish_reason"] in ("stop", "length")
        return "ok"
    events = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", events[-3:]
    chunks = [json.loads(e) for e in events[:-1]]
    assert not any("error" in c for c in chunks), chunks
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    return "ok"


async def client_loop(client: httpx.AsyncClient, url: str, index: int, rounds: int) -> list[str]:
    return [await one_request(client, url, stream=(index + r) % 2 == 0) for r in range(rounds)]


def test_four_times_capacity_gets_answers_or_refusals_never_a_hang(base_url):
    async def burst() -> list[str]:
        limits = httpx.Limits(max_connections=CLIENTS)
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S, limits=limits) as client:
            loops = [client_loop(client, base_url, i, rounds=2) for i in range(CLIENTS)]
            return [o for outcomes in await asyncio.gather(*loops) for o in outcomes]

    outcomes = asyncio.run(burst())
    assert len(outcomes) == 2 * CLIENTS
    assert outcomes.count("refused") > 0  # the bounds did bite
    assert outcomes.count("ok") >= CAPACITY  # and the server kept working through it


def wait_idle(timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        stats = replica_stats()
        if stats["running"] == 0 and stats["waiting"] == 0 or time.monotonic() > deadline:
            return stats


def slow(stream: bool) -> dict:
    # ~450 answer tokens without a cache: seconds of engine work, long past the first block
    return body(stream, max_tokens=448, block_length=32, steps=448, use_cache=False)


def test_a_streaming_client_that_leaves_cancels_its_engine_work(base_url):
    before = wait_idle()["finished"].get("cancelled", 0)
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=slow(True), timeout=60) as reply:
        assert reply.status_code == 200
        lines = reply.iter_lines()
        assert next(lines).startswith("data: ")  # the stream started; now hang up
    stats = wait_idle()
    assert stats["running"] == 0 and stats["waiting"] == 0
    assert stats["finished"].get("cancelled", 0) == before + 1


def test_a_waiting_client_that_times_out_cancels_its_engine_work(base_url):
    before = wait_idle()["finished"].get("cancelled", 0)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{base_url}/v1/chat/completions", json=slow(False), timeout=1.0)
    stats = wait_idle()
    assert stats["running"] == 0 and stats["waiting"] == 0
    assert stats["finished"].get("cancelled", 0) == before + 1


def test_server_is_healthy_afterwards(base_url):
    health = httpx.get(f"{base_url}/health", timeout=10).json()
    assert health["status"] == "healthy" and health["model_loaded"] is True
    reply = httpx.post(f"{base_url}/v1/chat/completions", json=body(False), timeout=60)
    assert reply.status_code == 200 and reply.json()["choices"][0]["finish_reason"] in ("stop", "length")
    assert replica_stats()["finished"].get("error", 0) == 0
