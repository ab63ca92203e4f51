"""Every request the app receives ends in exactly one status of `ray_fastdllm_requests_total`:
a burst of 150 streams dropped by their clients after the first event (most refused by Serve's
router or the engine queue, the rest cancelled), answered requests, bad ones, a timeout and a
replica that dies mid-request. The statuses add up to `requests_received_total`, and each
matches what the clients saw.

Last in the package on purpose: it kills the FATES model's replica at its end."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import httpx
import pytest
from tests.scaleout.scaleout_models import APP, FATES, RANDOM, engine_deployment

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

BURST, ANSWERED = 150, 16
# dual cache: a first block soon, then seconds (every block, whatever the model answers)
LONG = {"max_tokens": 448, "block_length": 32, "steps": 448, "ignore_eos": True}
NO_CACHE = {"max_tokens": 960, "block_length": 32, "steps": 960, "use_cache": False}  # tens of seconds
SHORT = {"max_tokens": 16, "block_length": 8, "steps": 16}
USER = [{"role": "user", "content": "12+30="}]
BAD_FOR_FATES = [{"model": FATES, "messages": USER, "steps": -1}] * 3  # found by the ingress, after routing
BAD_FOR_NONE = [{"model": "no-such-model", "messages": USER}] * 2 + [{"model": FATES}]  # found before


def chat(model: str, stream: bool, **fields) -> dict:
    return {"model": model, "messages": USER, "stream": stream, **fields}


async def dropped_stream(client: httpx.AsyncClient, url: str) -> str:
    """A client that reads the first event of its stream and hangs up."""
    async with client.stream("POST", f"{url}/v1/chat/completions", json=chat(FATES, True, **LONG)) as reply:
        if reply.status_code != 200:
            message = json.loads(await reply.aread())["error"]["message"]
            assert reply.status_code == 503 and reply.headers["retry-after"], message
            return "refused" if "every engine replica" in message else "rejected"
        async for line in reply.aiter_lines():
            if line.startswith("data: "):
                return "cancelled"
    raise AssertionError("a stream with no event")


async def answered(client: httpx.AsyncClient, url: str) -> str:
    reply = await client.post(f"{url}/v1/chat/completions", json=chat(FATES, False, **SHORT))
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]["finish_reason"]


async def engine_idle(timeout_s: float = 60) -> None:
    from ray import serve

    handle = serve.get_deployment_handle(engine_deployment(FATES), app_name=APP)
    deadline = time.monotonic() + timeout_s
    while (stats := await handle.stats.remote())["running"] or stats["waiting"]:
        assert time.monotonic() < deadline, stats
        await asyncio.sleep(0.2)


def kill_engine_replica(model: str) -> None:
    import ray

    prefix = f"SERVE_REPLICA::{APP}#{engine_deployment(model)}#"
    [name] = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)


def failed_mid_stream(url: str) -> str:
    """A stream whose engine replica is killed after its first block: the error event's code."""
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=chat(FATES, True, **LONG), timeout=60) as reply:
        events = (json.loads(line[6:]) for line in reply.iter_lines() if line.startswith("data: {"))
        next(events)  # the role chunk
        next(events)  # a first block: the engine is working on it
        kill_engine_replica(FATES)
        return next(e for e in events if "error" in e)["error"]["code"]


async def traffic(url: str, seen: Counter) -> None:
    limits = httpx.Limits(max_connections=BURST + 10)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        seen.update(await asyncio.gather(*(dropped_stream(client, url) for _ in range(BURST))))
        await engine_idle()  # the dropped streams' engine work is aborted at its next step
        # two at a time: within the engine's bounds, and within Serve's queue (max_queued_requests 2)
        # even while the replica still unwinds the dropped streams' calls (their engine work is
        # gone, but Serve may count them a moment longer: three at once were refused then, once)
        for _ in range(ANSWERED // 2):
            seen.update(await asyncio.gather(*(answered(client, url) for _ in range(2))))
        for body in BAD_FOR_FATES + BAD_FOR_NONE:
            assert (await client.post(f"{url}/v1/chat/completions", json=body)).status_code == 400
            seen["invalid"] += 1
        reply = await client.post(f"{url}/v1/completions", json={"model": FATES, "prompt": "1+" * 600_000})
        assert reply.status_code == 413  # over the 1 MiB default max_body_bytes
        seen["too_large"] += 1
        reply = await client.post(f"{url}/v1/chat/completions", json=chat(RANDOM, False, **NO_CACHE))
        assert reply.status_code == 504 and reply.json()["error"]["code"] == "timeout"
        seen["timeout"] += 1


@pytest.fixture(scope="module")
def counted(app) -> tuple[Counter, Counter, float]:
    """What the clients saw by status, and what requests_total / requests_received_total gained."""
    before, received_before = app.fates()
    seen: Counter = Counter()
    asyncio.run(traffic(app.url, seen))
    assert failed_mid_stream(app.url) == "replica_failed"
    seen["failed"] += 1
    after, received_after = app.fates()
    after.subtract(before)
    return seen, +after, received_after - received_before


def test_statuses_add_up_to_requests_received_and_match_what_clients_saw(counted):
    seen, gained, received = counted
    by_status = Counter()
    for (_, _, status), count in gained.items():
        by_status[status] += count
    print("clients saw", dict(seen), "the server counted", dict(by_status))
    assert received == seen.total() == by_status.total()
    assert seen["cancelled"] and seen["refused"] and seen["rejected"]  # the burst hit every bound
    assert by_status == seen


def test_each_request_is_counted_under_its_model_and_replica(counted):
    seen, gained, _ = counted
    by_replica, by_model = Counter(), Counter()
    for (model, replica, _), count in gained.items():
        by_model[model] += count
        if model == FATES:
            by_replica[replica] += count
    # before any replica: refused by Serve's router, or a bad field the ingress found
    assert by_replica.pop("none") == seen["refused"] + len(BAD_FOR_FATES)
    assert len(by_replica) == 1  # the one replica took the rest
    assert by_model[RANDOM] == seen["timeout"]
    assert by_model["none"] == seen["too_large"] + len(BAD_FOR_NONE)  # no model named, or none served
