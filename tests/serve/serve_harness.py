"""Serving test harness: a local Ray cluster and an app per test module, started the way
`fastdllm-ray serve` starts it (commands.serve.start -> build_app), on free ports; or the
`fastdllm-ray serve` command itself in its own process; and reading Ray's Prometheus text."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from tests.net import free_port

from fastdllm_ray.serve.local import APP_START_TIMEOUT_S, local_app
AFTER_RECOVERY_TIMEOUT_S = 120


@contextmanager
def running_app(config, num_cpus: int = 2):
    """Starts Ray (with a Prometheus endpoint) and the app; yields (base_url, metrics_url)."""
    with local_app(config, num_cpus, APP_START_TIMEOUT_S) as urls:
        yield urls


def cli() -> list[str]:
    """The `fastdllm-ray` command of this environment."""
    script = Path(sys.executable).with_name("fastdllm-ray")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fastdllm_ray.cli"]


@dataclass
class CliServer:
    process: subprocess.Popen
    url: str  # http://127.0.0.1:<port>
    log: Path  # everything the command printed

    def output(self) -> str:
        return self.log.read_text()


@contextmanager
def cli_server(log: Path, *flags: str):
    """`fastdllm-ray serve --port <free> --metrics-port <free> *flags` in its own process (and so
    its own Ray cluster), as the README runs it; yields once it answers /health and has printed
    its banner; stops it with Ctrl-C (SIGINT) after. The command's exit code is left in
    `process.returncode` for the test to check."""
    port = free_port()
    out = log.open("w+")  # a file, not a pipe: Ray's logging cannot fill it and block
    process = subprocess.Popen([*cli(), "serve", "--port", str(port), "--metrics-port", str(free_port()), *flags],
                               stdout=out, stderr=subprocess.STDOUT, text=True)
    server = CliServer(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + APP_START_TIMEOUT_S
        while True:
            assert process.poll() is None, server.output()
            assert time.monotonic() < deadline, "the server did not come up"
            try:
                if httpx.get(f"{server.url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        while "Ctrl-C stops" not in server.output():  # deployed: the banner is out
            assert time.monotonic() < deadline, "the server did not say it was serving"
            time.sleep(0.5)
        yield server
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        finally:
            out.close()


def scrape(url: str) -> dict[str, list]:
    """The fastdllm samples of a Prometheus text endpoint, by sample name."""
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for sample in family.samples:
            if "fastdllm" in sample.name:
                samples.setdefault(sample.name, []).append(sample)
    return samples


def total(samples: dict, name: str, **labels) -> float:
    """The sum of one sample name's values over the samples whose labels match."""
    return sum(s.value for s in samples.get(name, [])
               if all(s.labels.get(k) == v for k, v in labels.items()))


def cumulative_series(url: str, prefixes: tuple[str, ...]) -> set[tuple]:
    """(name, labels) of every counter and histogram sample named with one of `prefixes`, after
    checking that no series is sent twice. Once exported these stay while their process lives,
    so a later read holds every one an earlier read did; Ray drops a gauge's series two export
    rounds after its last value, so gauges can come and go."""
    keys = []
    for family in text_string_to_metric_families(httpx.get(url, timeout=15).text):
        keys += [(s.name, tuple(sorted(s.labels.items()))) for s in family.samples
                 if family.type in ("counter", "histogram") and s.name.startswith(prefixes)]
    assert len(keys) == len(set(keys)), f"a series twice at {url}"
    return set(keys)


def replica_stats(app_name: str = "fastdllm") -> dict:
    from ray import serve

    return serve.get_deployment_handle("EngineReplica", app_name=app_name).stats.remote().result()


@dataclass
class Outcome:
    """One request of a client loop: when it ran, its status and, when refused, why."""

    started: float
    ended: float
    status: int
    code: str | None = None
    retry_after: str | None = None
    message: str = ""


async def client_loop(http: httpx.AsyncClient, url: str, body: dict, stop: asyncio.Event,
                      log: list[Outcome]) -> None:
    """Sends `body` to /v1/chat/completions, one request after another, until `stop` is set."""
    while not stop.is_set():
        started = time.monotonic()
        reply = await http.post(f"{url}/v1/chat/completions", json=body)
        outcome = Outcome(started, time.monotonic(), reply.status_code)
        if reply.status_code != 200:
            outcome.code, outcome.message = reply.json()["error"]["code"], reply.json()["error"]["message"]
            outcome.retry_after = reply.headers.get("retry-after")
        log.append(outcome)


def load_through_outage(url: str, body: dict, clients: int, break_it, wait_recovered) -> tuple[list[Outcome], float, float]:
    """`clients` client loops; 4 s in, break_it() (the outage begins), then wait_recovered() (in a
    thread, returns when the service is whole again); load goes on 4 s more, and until `clients`
    requests started after the recovery have ended (on a slow machine one takes seconds).
    Returns every request's outcome, when the outage began and when it was over."""

    async def scenario():
        log: list[Outcome] = []
        stop = asyncio.Event()
        async with httpx.AsyncClient(timeout=90) as http:
            tasks = [asyncio.create_task(client_loop(http, url, body, stop, log)) for _ in range(clients)]
            await asyncio.sleep(4)
            broken_at = time.monotonic()
            await asyncio.to_thread(break_it)
            await asyncio.to_thread(wait_recovered)
            recovered_at = time.monotonic()
            await asyncio.sleep(4)
            deadline = time.monotonic() + AFTER_RECOVERY_TIMEOUT_S
            while sum(o.started > recovered_at for o in log) < clients and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            stop.set()
            await asyncio.gather(*tasks)
        return log, broken_at, recovered_at

    return asyncio.run(scenario())
