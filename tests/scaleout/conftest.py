"""Scale-out suite: one local Ray cluster and one Serve app for the whole package, so that no
module pays for a start. The app is what a multi-model deployment looks like: eight models (four
LLaDA, one Dream, two Fast-dLLM v2, one LLaDA2.0) behind one ingress, routed by the request's
`model`, each sized for the module that uses it (scaleout_models.py names them).

The cluster declares more CPUs than the machine has: the tiny models' replicas are light, and
the autoscaled deployment needs room to grow to 4. Serve's autoscaling metrics and Ray's
metrics export run every second or faster here (10 s by default), so that scaling and the
Prometheus endpoint follow a test's load in seconds; the processes the cluster starts inherit
these variables, and they are put back when the package ends.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.scaleout.scaleout_models import APP, DREAM, FATES, LLADA2, PAIR, PREFIX, RANDOM, V2, autoscaled_entry
from tests.conftest import TINY_DREAM, TINY_LLADA2, TINY_V2
from tests.net import free_port

from fastdllm_ray.model.shipped import default_model_path

REF_CHECKPOINT = Path(__file__).resolve().parents[1] / "fixtures" / "refdata" / "checkpoint"
CLUSTER_CPUS = 14  # one per replica (13, the autoscaled model at its 4) and one spare
DEPLOY_TIMEOUT_S = 240
EXPORT_DEADLINE_S = 60
FAST_METRICS = {
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
    "RAY_metrics_report_interval_ms": "1000",
    "RAY_USAGE_STATS_ENABLED": "0",
}


@dataclass(frozen=True)
class App:
    url: str  # the app's base URL: /v1/... under it
    metrics_url: str

    def scrape(self, name: str) -> list:
        """The samples of one metric on Ray's Prometheus endpoint."""
        text = httpx.get(self.metrics_url, timeout=10).text
        return [sample for family in text_string_to_metric_families(text) for sample in family.samples
                if sample.name == name]

    def fates(self) -> tuple[Counter, float]:
        """This app's requests_total by (model, replica, status) and its requests_received_total,
        once every received request has a status and the figures stand still (Ray exports each
        process's counters on its own clock)."""
        deadline, last = time.monotonic() + EXPORT_DEADLINE_S, None
        while True:
            fates = Counter({(s.labels["model"], s.labels["replica"], s.labels["status"]): s.value
                             for s in self.scrape("ray_fastdllm_requests_total") if s.labels["application"] == APP})
            received = sum(self.totals("ray_fastdllm_requests_received_total", "route", application=APP).values())
            now = (fates, received)
            if received == sum(fates.values()) and now == last or time.monotonic() > deadline:
                return now
            last = now
            time.sleep(1.5)

    def totals(self, name: str, by: str, **match: str) -> dict[str, float]:
        """One metric's values summed by one label, over the samples whose labels match."""
        sums: dict[str, float] = {}
        for sample in self.scrape(name):
            if all(sample.labels.get(key) == value for key, value in match.items()):
                sums[sample.labels.get(by, "")] = sums.get(sample.labels.get(by, ""), 0.0) + sample.value
        return sums


def random_checkpoint(directory: Path) -> Path:
    """The refdata checkpoint (random weights, another size and vocabulary than the shipped
    model) with the shipped tokenizer files, whose ids all fall inside its vocabulary."""
    for source in [*REF_CHECKPOINT.iterdir(), *default_model_path().glob("tokenizer*.json")]:
        shutil.copy(source, directory / source.name)
    return directory


def app_config(random_model: Path) -> dict:
    return {
        "device": "cpu", "num_cpus_per_replica": 1,
        "models": [
            # fates: 2 slots + 2 queued in the engine, 8 handed to the replica, 2 more held by the
            # router; beyond that, refusals of both kinds
            {"model_name": FATES, "num_replicas": 1, "engine": {"max_num_seqs": 2, "max_queue": 2},
             "max_ongoing_requests": 8, "max_queued_requests": 2, "request_timeout_s": 60},
            # routing: two replicas of one sequence each, so a replica is either busy or free
            {"model_name": PAIR, "num_replicas": 2, "engine": {"max_num_seqs": 1, "max_queue": 8}},
            # another checkpoint behind the same ingress; its short deadline makes a timeout easy
            {"model": str(random_model), "model_name": RANDOM, "num_replicas": 1, "request_timeout_s": 2.0},
            autoscaled_entry(),
            # another model family: Dream's rules (shifted logits, `alg`) behind the same ingress
            {"model": str(TINY_DREAM), "model_name": DREAM, "num_replicas": 1,
             "engine": {"max_num_seqs": 4, "max_model_len": 256}},
            # the block-diffusion families: their own rules (carried ids, sub-blocks, quotas per block)
            {"model": str(TINY_V2), "model_name": V2, "num_replicas": 1, "engine": {"max_num_seqs": 4}},
            {"model": str(TINY_LLADA2), "model_name": LLADA2, "num_replicas": 1, "engine": {"max_num_seqs": 4}},
            # a block-diffusion family: prefix sharing and the prefix router (imbalance 4 // 2 = 2) on two
            # replicas whose pools (40 pages of 16) are small enough that cached prefixes get evicted
            {"model": str(TINY_V2), "model_name": PREFIX, "num_replicas": 2,
             "engine": {"max_num_seqs": 4, "max_queue": 8, "max_model_len": 512, "page_size": 16,
                        "num_pages": 40, "warm_up": False}},
        ],
    }


@pytest.fixture(scope="package")
def random_model_dir(tmp_path_factory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("llada-random"))


@pytest.fixture(scope="package")
def app(random_model_dir) -> Iterator[App]:
    import ray
    from ray import serve

    from fastdllm_ray.serve.builder import build_app

    saved = {key: os.environ.get(key) for key in FAST_METRICS}
    os.environ.update(FAST_METRICS)
    metrics_port, http_port = free_port(), free_port()
    ray.init(address="local", num_cpus=CLUSTER_CPUS, include_dashboard=False, _metrics_export_port=metrics_port,
             namespace=f"fastdllm-scaleout-{http_port}")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": http_port})
        serve.run(build_app(app_config(random_model_dir)), name=APP, route_prefix=f"/{APP}")  # returns once every replica runs
        url = f"http://127.0.0.1:{http_port}/{APP}"
        deadline = time.monotonic() + DEPLOY_TIMEOUT_S
        while httpx.get(f"{url}/health", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the app did not become healthy"
            time.sleep(0.5)
        yield App(url, f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        serve.shutdown()
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
