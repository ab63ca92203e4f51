"""Killing an engine replica's process under load: Ray Serve replaces it with no hand
restart, only requests caught by the dead replica fail (each with a retryable 503 and
Retry-After), the other replica keeps answering, and requests after recovery succeed."""

from __future__ import annotations

import time

import httpx
import pytest

from fastdllm_ray.model.shipped import DEFAULT_MODEL_NAME
from fastdllm_ray.serve.config import AppConfig
from serve_harness import load_through_outage, running_app

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]  # the first test includes the start, the kill and the recovery

APP, DEPLOYMENT = "fastdllm", "EngineReplica"
ONGOING = 6  # per replica: what one replica can have in flight when it dies
CLIENTS = 8
RECOVERY_TIMEOUT_S = 120
BODY = {"model": DEFAULT_MODEL_NAME, "messages": [{"role": "user", "content": "21+21="}], "max_tokens": 32,
        "block_length": 8, "steps": 32}


@pytest.fixture(scope="module")
def base_url():
    config = AppConfig(num_replicas=2, engine={"max_num_seqs": 2, "max_queue": 4}, max_ongoing_requests=ONGOING,
                       max_queued_requests=4 * CLIENTS,  # no cold-start backpressure: this test is about the kill
                       request_timeout_s=60)
    with running_app(config) as (url, _):
        yield url


def engine_replica_actors() -> set[str]:
    import ray

    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith("SERVE_REPLICA::") and f"#{DEPLOYMENT}#" in a["name"]}


def running_replicas() -> int:
    from ray import serve

    deployment = serve.status().applications[APP].deployments[DEPLOYMENT]
    return deployment.replica_states.get("RUNNING", 0) if deployment.status == "HEALTHY" else 0


def kill(name: str) -> None:
    import ray

    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)  # the process dies, as on a crash


def wait_replaced(killed: str) -> float:
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while True:
        actors = engine_replica_actors()
        if killed not in actors and len(actors) == 2 and running_replicas() == 2:
            return time.monotonic()
        assert time.monotonic() < deadline, "the killed replica was not replaced"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def kill_under_load(base_url):
    """Load from CLIENTS clients; a replica killed 4 s in; load until 4 s after its successor runs."""
    victims = sorted(engine_replica_actors())
    assert len(victims) == 2 and running_replicas() == 2

    return load_through_outage(base_url, BODY, CLIENTS, lambda: kill(victims[0]), lambda: wait_replaced(victims[0]))


def test_only_requests_caught_by_the_dead_replica_fail_and_retryably(kill_under_load):
    log, killed_at, recovered_at = kill_under_load
    failed = [o for o in log if o.status != 200]
    print(f"{len(log)} requests, {len(failed)} failed; recovery took {recovered_at - killed_at:.1f} s")
    print(*[(round(o.started - killed_at, 2), round(o.ended - killed_at, 2), o.code, o.message) for o in failed], sep="\n")
    assert failed, "the kill caught no request in flight: the test proved nothing"
    for o in failed:
        assert o.status == 503 and o.retry_after and o.code in ("replica_failed", "overloaded"), o
        assert o.started < recovered_at and o.ended >= killed_at  # caught by the outage, not after it
    in_flight_at_kill = [o for o in failed if o.started < killed_at]
    assert len(in_flight_at_kill) <= ONGOING  # at most what the dead replica held


def test_the_other_replica_kept_answering_during_the_outage(kill_under_load):
    log, killed_at, recovered_at = kill_under_load
    assert any(o.status == 200 and killed_at < o.started and o.ended < recovered_at for o in log)


def test_requests_after_recovery_all_succeed(base_url, kill_under_load):
    log, _, recovered_at = kill_under_load
    after = [o for o in log if o.started > recovered_at]
    assert len(after) >= CLIENTS and all(o.status == 200 for o in after)
    assert httpx.get(f"{base_url}/health", timeout=10).status_code == 200
