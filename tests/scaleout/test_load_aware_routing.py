"""Requests go where the load is not: with a long request holding one replica's only slot,
short requests sent meanwhile are all taken by the other replica (Serve's power-of-two-choices
router compares the replicas' ongoing requests), instead of every other one waiting behind the
long request as blind round-robin would have it. Which replica took each request is read from
`ray_fastdllm_requests_total`'s replica label."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from tests.scaleout.scaleout_models import PAIR

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]

SHORTS = 8
# far longer than the shorts; blocks of 8 show it running (and let it hang up) within a second or two
# every block decoded whatever the model answers (ignore_eos): a request that stays busy
LONG = {"max_tokens": 448, "block_length": 8, "steps": 448, "use_cache": False, "ignore_eos": True}
SHORT = {"max_tokens": 16, "block_length": 8, "steps": 16}


def chat(**fields) -> dict:
    return {"model": PAIR, "messages": [{"role": "user", "content": "12+30="}], **fields}


class LongStream(threading.Thread):
    """A streamed long request, read until `stop` is set (then the client hangs up)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.running, self.stop, self.finished = url, threading.Event(), threading.Event(), False

    def run(self) -> None:
        with httpx.stream("POST", f"{self.url}/v1/chat/completions", json=chat(stream=True, **LONG),
                          timeout=120) as reply:
            for line in reply.iter_lines():
                if line.startswith("data: {") and "role" not in json.loads(line[6:])["choices"][0]["delta"]:
                    self.running.set()  # a first block (its text may be empty): the request holds its slot
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["finish_reason"]:
                    self.finished = True
                if self.stop.is_set() or self.finished:
                    return


@pytest.fixture(scope="module")
def skewed(app):
    """One long request, then SHORTS short ones one after another; the fates they left."""
    before, _ = app.fates()
    long = LongStream(app.url)
    long.start()
    assert long.running.wait(60), "the long request never produced a block"
    latencies = []
    with httpx.Client(timeout=60) as client:
        for _ in range(SHORTS):
            start = time.monotonic()
            reply = client.post(f"{app.url}/v1/chat/completions", json=chat(**SHORT))
            assert reply.status_code == 200, reply.text
            latencies.append(time.monotonic() - start)
    assert not long.finished, "the long request ended before the short ones: the test proves nothing"
    long.stop.set()
    long.join(30)
    after, _ = app.fates()
    after.subtract(before)
    return +after, latencies


def test_short_requests_are_all_taken_by_the_free_replica(skewed):
    gained, latencies = skewed
    print(f"short latencies {[round(s, 2) for s in latencies]}; fates {dict(gained)}")
    by_replica: dict[str, dict[str, float]] = {}
    for (model, replica, status), count in gained.items():
        if model == PAIR:
            by_replica.setdefault(replica, {})[status] = count
    [long_replica] = [r for r, statuses in by_replica.items() if "cancelled" in statuses]
    assert by_replica.pop(long_replica) == {"cancelled": 1}  # nothing waited behind the long request
    [(other, statuses)] = by_replica.items()
    assert sum(statuses.values()) == SHORTS and set(statuses) <= {"stop", "length"}
