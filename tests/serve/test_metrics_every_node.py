"""`GET /metrics` on the API port is one scrape target for a whole cluster: on a real two-node
Ray cluster (a head and a worker, each started by `ray start` with its own metrics export port),
with the ingress on the head and the engine replica on the worker, it serves the app's series of
both nodes' exporters, merged. When the worker is lost, it still answers with the head's series
and says the worker's exporter is down (or no longer lists it once Ray has declared it dead).

Placement is made certain: the head declares no GPU and the app deploys before the worker (which
declares one) exists, so the ingress lands on the head; the one-GPU engine replica can only go
to the worker."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.deploy.ray_processes import START_TIMEOUT_S, end_group, kill_stragglers, port_open, wait_for
from tests.deploy.test_two_node_cluster import ray_start
from tests.net import free_port

from fastdllm_ray.model.shipped import DEFAULT_MODEL_NAME
from fastdllm_ray.serve.config import AppConfig
from fastdllm_ray.serve.metrics_proxy import APP_METRIC_PREFIXES, EXPORTER_UP
from serve_harness import cumulative_series

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]

APP = "fastdllm"
REQUESTS = 3
EXPORT_DEADLINE_S = 60  # these nodes export every second (private_env)


def series(url: str) -> dict[tuple, float]:
    """Every sample of a Prometheus text endpoint: (name, labels) -> value."""
    text = httpx.get(url, timeout=15).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def exporters_up(samples: dict) -> dict[str, float]:
    return {dict(labels)["exporter"]: value for (name, labels), value in samples.items() if name == EXPORTER_UP}


def of(samples: dict, name: str) -> float:
    return sum(value for (sample, _), value in samples.items() if sample == name)


@pytest.fixture(scope="module")
def cluster():
    """Yields (API base URL, {'head': exporter port, 'worker': exporter port}, worker process, worker dir)."""
    import ray
    from ray import serve

    from fastdllm_ray.serve.builder import build_app

    workdir = Path(tempfile.mkdtemp(prefix="fdrm-", dir="/tmp"))  # short: Ray's unix sockets live under it
    log_path = workdir / "cluster.log"
    gcs, http_port = free_port(), free_port()
    ports = {"head": free_port(), "worker": free_port()}
    processes = []
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # as the cluster's processes (private_env)
    with open(log_path, "w") as log:
        try:
            processes.append(ray_start("head", workdir, log, "--head", "--num-gpus=0", f"--port={gcs}",
                                       f"--dashboard-port={free_port()}", "--dashboard-host=127.0.0.1",
                                       f"--ray-client-server-port={free_port()}", metrics_port=ports["head"]))
            wait_for(lambda: port_open(gcs), time.monotonic() + START_TIMEOUT_S, processes, log_path)
            ray.init(address=f"127.0.0.1:{gcs}", namespace="metrics-every-node")
            serve.start(http_options={"host": "127.0.0.1", "port": http_port}, proxy_location="HeadOnly")
            config = AppConfig(device="cpu", num_gpus_per_replica=1, engine={"max_num_seqs": 2, "max_queue": 4})
            # serve.run returns once every replica runs: the engine's only after the worker joins
            deployed = ThreadPoolExecutor(1).submit(serve.run, build_app(config), name=APP, route_prefix="/")
            wait_for(ingress_running, time.monotonic() + START_TIMEOUT_S, processes, log_path)
            processes.append(ray_start("worker", workdir, log, f"--address=127.0.0.1:{gcs}", "--num-gpus=1",
                                       metrics_port=ports["worker"]))
            deployed.result(timeout=4 * START_TIMEOUT_S)
            yield f"http://127.0.0.1:{http_port}", ports, processes[-1], workdir / "worker"
        finally:
            ray.shutdown()
            for process in reversed(processes):
                end_group(process, signal.SIGTERM, grace_s=3)
            kill_stragglers(str(workdir))
            shutil.rmtree(workdir, ignore_errors=True)
            os.environ.pop("RAY_AUTH_MODE") if saved is None else os.environ.update(RAY_AUTH_MODE=saved)


def ingress_running() -> bool:
    from ray import serve

    app = serve.status().applications.get(APP)
    ingress = app.deployments.get("OpenAIIngress") if app else None
    return bool(ingress) and ingress.replica_states.get("RUNNING", 0) == 1


@pytest.fixture(scope="module")
def merged(cluster) -> dict:
    """/metrics once the requests below are exported by both the ingress (head) and the engine (worker)."""
    url, ports, *_ = cluster
    for i in range(REQUESTS):
        reply = httpx.post(f"{url}/v1/completions", timeout=120,
                           json={"model": DEFAULT_MODEL_NAME, "prompt": f"{i}+2=", "max_tokens": 16,
                                 "block_length": 8, "steps": 16})
        assert reply.status_code == 200, reply.text
    deadline = time.monotonic() + EXPORT_DEADLINE_S
    while True:
        samples = series(f"{url}/metrics")
        if (of(samples, "ray_fastdllm_requests_total") == REQUESTS
                and of(samples, "ray_fastdllm_request_latency_seconds_count") == REQUESTS):
            return samples
        assert time.monotonic() < deadline, "the two nodes' figures were not exported"
        time.sleep(1)


def test_both_nodes_exporters_are_merged(cluster, merged):
    _, ports, *_ = cluster
    assert {exporter.rsplit(":", 1)[1]: up for exporter, up in exporters_up(merged).items()} == {
        str(ports["head"]): 1, str(ports["worker"]): 1}


def node_keys(ports: dict) -> tuple[set, set]:
    return tuple(cumulative_series(f"http://127.0.0.1:{ports[node]}/metrics", APP_METRIC_PREFIXES)
                 for node in ("head", "worker"))


def test_metrics_holds_the_app_series_of_each_node_and_those_differ(cluster, merged):
    url, ports, *_ = cluster
    head, worker = node_keys(ports)
    now = cumulative_series(f"{url}/metrics", APP_METRIC_PREFIXES)
    later = set().union(*node_keys(ports))
    # counters and histograms are only ever added (a scrape adds its route's): both nodes' before <= ours <= after
    assert head | worker <= now <= later
    assert worker - head and head - worker  # each node brings series the other has not
    # the engine replica's figures come from the worker alone, the ingress's from the head alone
    assert any(name == "ray_fastdllm_nfe_total" for name, _ in worker) and not any(
        name == "ray_fastdllm_nfe_total" for name, _ in head)
    assert any(name == "ray_fastdllm_requests_received_total" for name, _ in head)
    assert of(merged, "ray_fastdllm_nfe_total") > 0 and of(merged, "ray_fastdllm_requests_received_total") == REQUESTS


def test_a_lost_node_leaves_metrics_answering_with_the_rest(cluster, merged):
    url, ports, worker, worker_dir = cluster
    end_group(worker, signal.SIGKILL, grace_s=0)
    kill_stragglers(str(worker_dir))
    reply = httpx.get(f"{url}/metrics", timeout=15)
    assert reply.status_code == 200
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(reply.text) for s in family.samples}
    up = {exporter.rsplit(":", 1)[1]: value for exporter, value in exporters_up(samples).items()}
    assert up[str(ports["head"])] == 1 and up.get(str(ports["worker"]), 0) == 0  # down, or no longer listed
    assert of(samples, "ray_fastdllm_requests_received_total") == REQUESTS  # the head's series are all there
