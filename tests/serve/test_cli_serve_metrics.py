"""`fastdllm-ray serve`, run as the README says, prints where its metrics are and serves them:
Ray's exporter on the fixed `--metrics-port`, and `GET /metrics` on the API port. After known
traffic (answered requests, bad ones, streams their clients drop), both addresses show request
fates that add up to the requests received, moved token and NFE counters, and cache-hit and
tokens-per-forward gauges in range. A taken metrics port is refused by name before Ray starts.

Ray exports what a process records on its own clock (every 10 s by default), so each check
scrapes until the figures the traffic must produce are there, within EXPORT_DEADLINE_S."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import time

import httpx
import pytest
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families

from fastdllm_ray.model.shipped import DEFAULT_MODEL_NAME
from fastdllm_ray.serve.metrics_proxy import APP_METRIC_PREFIXES, EXPORTER_UP
from serve_harness import cli, cli_server, cumulative_series, scrape, total
from tests.net import free_port

pytestmark = [pytest.mark.ray, pytest.mark.timeout(480)]

EXPORT_DEADLINE_S = 90  # two of Ray's 10 s export rounds, with room for a starved machine
BLOCK = 8
ANSWERED = [  # (route, extra fields): every cache mode, fixed steps and threshold decoding
    ("completions", {"max_tokens": 32, "block_length": BLOCK, "steps": 32}),
    ("completions", {"max_tokens": 32, "block_length": BLOCK, "steps": 32, "threshold": 0.9}),
    ("completions", {"max_tokens": 16, "block_length": BLOCK, "steps": 16, "use_dual_cache": False}),
    ("chat", {"max_tokens": 32, "block_length": BLOCK, "steps": 32, "threshold": 0.9}),
    ("chat", {"max_tokens": 16, "block_length": BLOCK, "steps": 16, "use_cache": False}),
    ("chat", {"max_tokens": 24, "block_length": BLOCK, "steps": 12, "factor": 1.0}),
]
INVALID = [{"model": DEFAULT_MODEL_NAME, "prompt": "1+1=", "threshold": 2.0},  # a field out of range
           {"model": "no-such-model", "prompt": "1+1="}]  # an unknown model
DROPPED = 2  # streams whose client hangs up after the first event
LONG = {"max_tokens": 448, "block_length": 32, "steps": 448}  # a first event at once, the answer seconds later
RECEIVED = len(ANSWERED) + len(INVALID) + DROPPED


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("cli-metrics") / "serve.log"
    with cli_server(log, "--max-num-seqs", "2", "--max-queue", "8", "--num-cpus", "2") as running:
        yield running
    assert running.process.returncode == 0, running.output()


@pytest.fixture(scope="module")
def printed(server) -> dict[str, str]:
    """The metrics addresses the command printed: {'metrics': url, 'ray metrics': url}."""
    return dict(re.findall(r"^(metrics|ray metrics): (\S+)", server.output(), re.MULTILINE))


async def dropped_stream(http: httpx.AsyncClient, url: str) -> None:
    body = {"model": DEFAULT_MODEL_NAME, "messages": [{"role": "user", "content": "12+30="}], "stream": True, **LONG}
    async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as reply:
        assert reply.status_code == 200, await reply.aread()
        async for line in reply.aiter_lines():
            if line.startswith("data: "):
                return  # hang up
    raise AssertionError("a stream with no event")


@pytest.fixture(scope="module")
def traffic(server) -> dict:
    """Sends every request above; returns the answers' usage, summed."""
    client = AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=180)

    async def ask(route: str, fields: dict):
        if route == "chat":
            return await client.chat.completions.create(
                model=DEFAULT_MODEL_NAME, messages=[{"role": "user", "content": "What is 23+58?"}], extra_body=fields)
        return await client.completions.create(model=DEFAULT_MODEL_NAME, prompt="7*6=", extra_body=fields)

    async def send_all():
        async with httpx.AsyncClient(timeout=180) as http:
            for body in INVALID:
                assert (await http.post(f"{server.url}/v1/completions", json=body)).status_code == 400
            replies = await asyncio.gather(*(ask(route, fields) for route, fields in ANSWERED),
                                           *(dropped_stream(http, server.url) for _ in range(DROPPED)))
        return replies[:len(ANSWERED)]

    usage = [reply.usage for reply in asyncio.run(send_all())]
    return {"prompt_tokens": sum(u.prompt_tokens for u in usage),
            "completion_tokens": sum(u.completion_tokens for u in usage), "nfe": sum(u.nfe for u in usage)}


def settled(url: str) -> dict:
    """The fastdllm samples at `url` once every request sent has been received and has a fate,
    and the engine holds none (each figure reaches the endpoint on its process's export round)."""
    deadline = time.monotonic() + EXPORT_DEADLINE_S
    while True:
        samples = scrape(url)
        received = total(samples, "ray_fastdllm_requests_received_total")
        if (received == RECEIVED == total(samples, "ray_fastdllm_requests_total")
                and "ray_fastdllm_running_requests" in samples
                and total(samples, "ray_fastdllm_running_requests") == 0
                and total(samples, "ray_fastdllm_nfe_total") > 0):
            return samples
        assert time.monotonic() < deadline, f"not exported in {EXPORT_DEADLINE_S} s: received {received}"
        time.sleep(1)


@pytest.fixture(scope="module", params=["ray metrics", "metrics"])
def exported(request, printed, traffic) -> dict:
    """The samples at each printed address (Ray's exporter, then /metrics on the API port)."""
    return settled(printed[request.param])


def test_the_command_prints_both_metrics_addresses(server, printed):
    assert printed["metrics"] == f"{server.url}/metrics"
    flags = server.process.args
    metrics_port = flags[flags.index("--metrics-port") + 1]
    assert printed["ray metrics"] == f"http://127.0.0.1:{metrics_port}/metrics"  # the port asked for, as Ray reports it
    for url in printed.values():
        reply = httpx.get(url, timeout=10)
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")


def test_request_fates_add_up_to_the_requests_received(exported):
    fates = {status: total(exported, "ray_fastdllm_requests_total", status=status)
             for status in {s.labels["status"] for s in exported["ray_fastdllm_requests_total"]}}
    assert sum(fates.values()) == total(exported, "ray_fastdllm_requests_received_total") == RECEIVED
    assert fates.get("stop", 0) + fates.get("length", 0) == len(ANSWERED)
    assert fates.get("invalid") == len(INVALID) and fates.get("cancelled") == DROPPED
    assert total(exported, "ray_fastdllm_requests_received_total", route="/v1/chat/completions") == 3 + DROPPED


def test_token_and_nfe_counters_moved(exported, traffic):
    model = {"model": DEFAULT_MODEL_NAME}
    # at least the answers' own figures: the dropped streams' engine work counts too
    assert total(exported, "ray_fastdllm_prompt_tokens_total", **model) >= traffic["prompt_tokens"] > 0
    assert total(exported, "ray_fastdllm_generated_tokens_total", **model) >= traffic["completion_tokens"] > 0
    assert total(exported, "ray_fastdllm_nfe_total", **model) >= traffic["nfe"] > 0
    assert total(exported, "ray_fastdllm_request_latency_seconds_count", **model) >= len(ANSWERED)
    assert total(exported, "ray_fastdllm_forwards_total", kind="dual") > 0
    assert total(exported, "ray_fastdllm_forwards_total", kind="prefix") > 0
    assert total(exported, "ray_fastdllm_forwards_total", kind="full") > 0


def test_cache_hit_rate_and_tokens_per_forward_gauges_are_in_range(exported):
    [hit_rate] = [s.value for s in exported["ray_fastdllm_cache_hit_rate"]]  # one replica
    [per_forward] = [s.value for s in exported["ray_fastdllm_tokens_per_forward"]]
    assert 0 < hit_rate < 1  # cached key positions / attended ones, after cached and uncached decoding
    # every forward commits at least one token and at most a block (the largest sent: warm-up's are not counted)
    assert 1 <= per_forward <= LONG["block_length"]


def test_metrics_on_the_api_port_is_every_app_series_of_the_ray_exporter(printed, traffic, exported):
    before = cumulative_series(printed["ray metrics"], APP_METRIC_PREFIXES)
    merged = cumulative_series(printed["metrics"], APP_METRIC_PREFIXES)
    after = cumulative_series(printed["ray metrics"], APP_METRIC_PREFIXES)
    # counters and histograms are only ever added (a scrape of /metrics adds its route's): Ray's before <= ours <= Ray's after
    assert before <= merged <= after and any(name.startswith("ray_serve_") for name, _ in merged)
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(printed["metrics"], timeout=15).text)}
    assert all(name.startswith(APP_METRIC_PREFIXES) for name in set(families) - {EXPORTER_UP})  # nothing else
    port = printed["ray metrics"].rsplit(":", 1)[1].split("/")[0]
    [up] = families[EXPORTER_UP].samples  # one node, merged
    assert up.value == 1 and up.labels["exporter"].endswith(f":{port}")


def test_a_taken_metrics_port_is_refused_by_name_before_ray_starts():
    with socket.socket() as holder:
        holder.bind(("", free_port()))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run([*cli(), "serve", "--metrics-port", str(port), "--port", str(free_port())],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert f"--metrics-port: port {port} is taken" in done.stderr and "--metrics-port <port>" in done.stderr


def test_metrics_port_is_refused_with_a_cluster_to_join():
    done = subprocess.run([*cli(), "serve", "--address", "127.0.0.1:1", "--metrics-port", "9090"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "--metrics-port: sets the port of a cluster this command starts" in done.stderr
