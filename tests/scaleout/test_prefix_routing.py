"""Across replicas, a request goes where its prompt's prefix already is (serve/prefix_router.py). On
two replicas of the tiny Fast-dLLM v2 (4 seats: a holder keeps its prefix until it has 2 more
ongoing requests than the other), the requests of two long system prompts each land on "their"
replica and take the system prompt's blocks from its prefix cache (OpenAI's
usage.prompt_tokens_details.cached_tokens); when one system prompt's requests pile up, they spill
to the other replica; no request is lost. Which replica took each request comes from the
requests_total replica label, what each cached from its cached_prompt_tokens_total; and these
replicas export the prefix-cache series the Grafana dashboard queries; the chat CLI's next turn
shows the prompt tokens the server had cached. Real HTTP, the official openai client."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pexpect
import pytest
from openai import OpenAI
from tests.deploy.test_grafana_dashboard import SHARING_ONLY
from tests.playground.test_chat_cli import cli
from tests.scaleout.conftest import EXPORT_DEADLINE_S
from tests.scaleout.scaleout_models import PREFIX

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]

SYSTEM = {  # ~150 tokens each: 4 whole blocks of 32 before the question begins
    "A": ("You are the archivist of a lighthouse library. Answer every question about tides, ships, storms "
          "and the keepers who lived here, in plain words and short sentences, and never invent a date."),
    "B": ("You are a patient tutor of mountain geology. Explain how ridges, glaciers and rivers shape a valley, "
          "one idea at a time, and end each answer with a question for the student."),
}
SHARED_BLOCKS = 128  # of a system prompt's requests, the positions every one begins with (whole blocks)
QUESTIONS = ["Who kept the light?", "Who kept the light?", "What is a spring tide?"]  # a repeat: a whole prefill cached
SPILL = 6  # concurrent requests of one system prompt: beyond the holder's margin of 2


def messages(system: str, question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM[system]}, {"role": "user", "content": question}]


def ask(client: OpenAI, system: str, question: str, max_tokens: int = 32):  # v2: whole blocks of 32
    return client.chat.completions.create(model=PREFIX, messages=messages(system, question), max_tokens=max_tokens)


def gained(app, before: Counter) -> dict[str, Counter]:
    """PREFIX's requests_total since `before`, by replica and status."""
    after, _ = app.fates()
    after.subtract(before)
    by_replica: dict[str, Counter] = {}
    for (model, replica, status), count in (+after).items():
        if model == PREFIX:
            by_replica.setdefault(replica, Counter())[status] += count
    return by_replica


def cached_by_replica(app) -> dict[str, float]:
    return app.totals("ray_fastdllm_cached_prompt_tokens_total", "replica", model=PREFIX)


def settled(read, done):
    """read() once done(its value) holds, or at the deadline (Ray exports every few seconds)."""
    deadline = time.monotonic() + EXPORT_DEADLINE_S
    while not done(value := read()) and time.monotonic() < deadline:
        time.sleep(1.5)
    return value


@pytest.fixture(scope="module")
def client(app) -> OpenAI:
    return OpenAI(base_url=f"{app.url}/v1", api_key="unused", timeout=120, max_retries=0)


@pytest.fixture(scope="module")
def homes(app, client) -> dict[str, str]:
    """Each system prompt's replica: A's first request holds one replica while B's first arrives,
    so B's (a prefix nobody holds) goes where the load is not."""
    before, _ = app.fates()
    stream = client.chat.completions.create(model=PREFIX, messages=messages("A", "Tell me everything."),
                                            max_tokens=320, stream=True)
    chunks = iter(stream)
    next(chunks)  # the role chunk: the request was admitted
    running = threading.Event()
    first_b = {}

    def hold() -> None:  # read A's stream on, so that its replica keeps decoding it
        try:
            for chunk in chunks:
                if chunk.choices and chunk.choices[0].finish_reason:
                    first_b.setdefault("a_finished_first", "b" not in first_b)
                running.set()
        except Exception:  # the stream closed under it
            pass

    reader = threading.Thread(target=hold, daemon=True)
    reader.start()
    assert running.wait(60), "A's long request never produced a block"
    first_b["b"] = ask(client, "B", "How is a valley made?")
    stream.close()  # the client hangs up: A's request is cancelled, its prompt's blocks stay cached
    reader.join(30)
    assert not first_b.get("a_finished_first"), "A's request ended before B's arrived: the test proves nothing"
    assert first_b["b"].usage.prompt_tokens_details.cached_tokens == 0  # nobody held B's prompt
    placed = gained(app, before)
    [a_home] = [replica for replica, statuses in placed.items() if statuses["cancelled"]]
    [b_home] = [replica for replica, statuses in placed.items() if statuses["stop"] + statuses["length"]]
    assert a_home != b_home, placed
    return {"A": a_home, "B": b_home}


def test_each_system_prompts_requests_land_on_its_replica_and_reuse_its_blocks(app, client, homes):
    before, cached_before = app.fates()[0], cached_by_replica(app)
    cached = {"A": 0, "B": 0}
    for question in QUESTIONS:
        for system in ("A", "B"):
            reply = ask(client, system, question)
            details = reply.usage.prompt_tokens_details
            # at least the system prompt's blocks came from a cache: only its home replica had them
            assert details.cached_tokens >= SHARED_BLOCKS, (system, question, reply.usage)
            cached[system] += details.cached_tokens
    placed = gained(app, before)
    assert {replica: sum(statuses.values()) for replica, statuses in placed.items()} == {
        homes["A"]: len(QUESTIONS), homes["B"]: len(QUESTIONS)}
    # each replica's counter holds exactly its own system prompt's cached tokens
    after = settled(lambda: cached_by_replica(app),
                    lambda now: sum(now.values()) - sum(cached_before.values()) >= sum(cached.values()))
    for system, replica in homes.items():
        assert after.get(replica, 0) - cached_before.get(replica, 0) == cached[system]


def test_a_busy_replicas_prefix_spills_over_and_no_request_is_lost(app, client, homes):
    before, _ = app.fates()
    with ThreadPoolExecutor(SPILL) as pool:
        replies = list(pool.map(lambda i: ask(client, "A", f"Question {i}: which ship came last?", 64),
                                range(SPILL)))
    assert all(reply.choices[0].finish_reason in ("stop", "length") for reply in replies)
    placed = gained(app, before)
    print(f"{SPILL} requests of A at once: {dict(placed)} (A's home {homes['A']})")
    assert sum(sum(statuses.values()) for statuses in placed.values()) == SPILL
    assert all(set(statuses) <= {"stop", "length"} for statuses in placed.values())
    assert placed.get(homes["B"]), "every request stayed on A's replica however busy"
    assert placed[homes["A"]], "none went to the replica holding their prefix"


def test_prefix_cache_series_are_exported_by_the_sharing_replicas(app, client, homes):
    # prompts nobody shares fill the small pools (40 pages of 16 a replica) until cached pages go
    for i in range(10):
        ask(client, "A" if i % 2 else "B", f"Unrelated {i}: " + " ".join(f"word{i}{j}" for j in range(40)), 32)

    def series() -> dict[str, dict[str, float]]:
        names = ["ray_fastdllm_prefix_cache_hit_rate", "ray_fastdllm_prefix_cache_pages", *sorted(SHARING_ONLY)]
        return {name: app.totals(name, "replica", model=PREFIX) for name in names}

    def complete(now: dict) -> bool:
        return all(set(homes.values()) <= {r for r, v in values.items() if v > 0} if "evictions" not in name
                   else sum(values.values()) > 0 for name, values in now.items())

    exported = settled(series, complete)
    assert complete(exported), exported  # every series, on both replicas (evictions: on either)
    assert all(rate < 1 for rate in exported["ray_fastdllm_prefix_cache_hit_rate"].values())


CHAT_FIGURES = re.compile(r"prompt (\d+) tokens(?:, (\d+) cached)?\]")
SYSTEM_C = ("You keep the logbook of a small river ferry. Note the weather, the passengers and the cargo of every "
            "crossing, and answer questions about past crossings from the log alone.")


def test_the_chat_clis_next_turn_shows_the_prompt_tokens_the_server_had_cached(app):
    command, *args = cli()
    terminal = pexpect.spawn(command, [*args, "chat", "--base-url", app.url, "--model", PREFIX, "--max-tokens", "32",
                                       "--system", SYSTEM_C], encoding="utf-8", timeout=120, dimensions=(40, 200))
    try:
        figures = []
        for question in ("When did the ferry cross last?", "And the time before?"):
            terminal.expect_exact("you> ")
            terminal.sendline(question)
            terminal.expect(CHAT_FIGURES)
            prompt, cached = terminal.match.groups()
            figures.append((int(prompt), int(cached or 0)))
        (first_prompt, first_cached), (second_prompt, second_cached) = figures
        assert first_cached == 0  # nobody held this system prompt
        # the second turn begins with the first (system, question, answer): at least its whole blocks
        assert second_prompt > first_prompt and second_cached >= first_prompt // 32 * 32 - 32 > 0
        terminal.sendeof()
        terminal.expect(pexpect.EOF)
    finally:
        terminal.close(force=True)
