"""A real two-node Ray cluster on one machine (a head and a worker, each started by `ray start`
with its own temp dir and ports, each declaring GPUs so that `num_gpus: 1` replicas schedule on
the CPU): `serve deploy deployments/tiny-cpu.yaml` with two one-GPU replicas places one on each
node and answers through the ingress; when the worker node dies, only the requests in flight on
its replica fail (503 + Retry-After), the head's replica keeps answering, and the lost replica
is replaced on the head.

Placement is made certain, not left to Serve's spreading: the head declares 2 GPUs and the
test holds one of them while the app deploys (before the worker exists, so the ingress lands
on the head too), then frees it for the replacement once the worker has taken the second replica.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tests.deploy.ray_processes import BIN, START_TIMEOUT_S, end_group, kill_stragglers, port_open, private_env, wait_for
from tests.net import free_port
from tests.serve.serve_harness import load_through_outage

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
APP, ENGINE = "tiny-cpu", "EngineReplica"
CLIENTS = 6
ONGOING = 4  # per replica: the most a dying replica can take down with it
RECOVERY_TIMEOUT_S = 120
# a lost node is declared dead after 3 missed 1 s health checks (default: 5 missed 3 s ones)
FAST_NODE_DEATH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}


STATE_API: dict[str, str] = {}  # the dashboard's address: other clusters on this machine confuse autodetection


def ray_start(name: str, workdir: Path, log, *args: str, metrics_port: int = 0) -> subprocess.Popen:
    ports = {flag: free_port() for flag in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                            "runtime-env-agent-port")}
    ports["metrics-export-port"] = metrics_port or free_port()
    return subprocess.Popen(
        [str(BIN / "ray"), "start", "--block", "--num-cpus=2", f"--temp-dir={workdir / name}",
         *[f"--{flag}={port}" for flag, port in ports.items()], *args],
        stdout=log, stderr=subprocess.STDOUT, env=private_env(**FAST_NODE_DEATH), start_new_session=True)


def deployment_file(workdir: Path, http_port: int) -> Path:
    config = yaml.safe_load((ROOT / "deployments" / "tiny-cpu.yaml").read_text())
    # one proxy (both nodes share a host and so a port); two replicas of one GPU each
    config.update(http_options={"host": "127.0.0.1", "port": http_port}, proxy_location="HeadOnly")
    app = config["applications"][0]
    app["args"].update(num_gpus_per_replica=1, num_replicas=2, engine={"max_num_seqs": 2, "max_queue": 2},
                       max_ongoing_requests=ONGOING, max_queued_requests=4 * CLIENTS)
    path = workdir / "two-node.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def engine_replicas() -> dict[str, str]:
    """Running engine replicas: replica id -> node id."""
    from ray.util.state import list_actors

    actors = list_actors(address=STATE_API["address"], filters=[("state", "=", "ALIVE")], limit=1000)
    prefix = f"SERVE_REPLICA::{APP}#{ENGINE}#"
    return {a.name[len(prefix):]: a.node_id for a in actors if (a.name or "").startswith(prefix)}


def running(count: int) -> bool:
    from ray import serve

    app = serve.status().applications.get(APP)
    deployment = app.deployments.get(ENGINE) if app else None
    return bool(deployment) and deployment.replica_states.get("RUNNING", 0) == count == len(engine_replicas())


def wait_until(predicate, timeout_s: float, what: str) -> float:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)
    return time.monotonic()


@pytest.fixture(scope="module")
def cluster():
    """Head (2 GPUs, one held), the app deployed on it, then the worker (1 GPU); yields
    (base_url, the head's metrics URL, head node id, the worker's process, the worker's temp dir)."""
    import ray

    workdir = Path(tempfile.mkdtemp(prefix="fdr2-", dir="/tmp"))  # short: Ray's unix sockets live under it
    log_path = workdir / "cluster.log"
    gcs, dashboard, http_port, metrics = free_port(), free_port(), free_port(), free_port()
    STATE_API["address"] = f"http://127.0.0.1:{dashboard}"
    processes: list[subprocess.Popen] = []
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # as the cluster's processes (private_env)
    with open(log_path, "w") as log:
        try:
            processes.append(ray_start("head", workdir, log, "--head", "--num-gpus=2", f"--port={gcs}",
                                       f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1",
                                       f"--ray-client-server-port={free_port()}", metrics_port=metrics))
            wait_for(lambda: port_open(gcs), time.monotonic() + START_TIMEOUT_S, processes, log_path)
            ray.init(address=f"127.0.0.1:{gcs}", namespace="two-node-test")
            head_node = ray.get_runtime_context().get_node_id()  # the driver's node: the only one yet
            hold = ray.util.placement_group([{"GPU": 1}])
            ray.get(hold.ready(), timeout=START_TIMEOUT_S)
            subprocess.run([str(BIN / "serve"), "deploy", "--address", f"http://127.0.0.1:{dashboard}",
                            str(deployment_file(workdir, http_port))], check=True, stdout=log, stderr=log,
                           env=private_env())
            wait_until(lambda: len(engine_replicas()) == 1, START_TIMEOUT_S, "no replica on the head")
            processes.append(ray_start("worker", workdir, log, f"--address=127.0.0.1:{gcs}", "--num-gpus=1"))
            wait_until(lambda: running(2), START_TIMEOUT_S, "the second replica did not start on the worker")
            ray.util.remove_placement_group(hold)  # a GPU free on the head, for the replacement
            yield (f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{metrics}/metrics", head_node, processes[-1],
                   workdir / "worker")
        finally:
            ray.shutdown()
            for process in reversed(processes):
                end_group(process, signal.SIGTERM, grace_s=3)  # the test is over: what outlives it is killed below
            kill_stragglers(str(workdir))
            shutil.rmtree(workdir, ignore_errors=True)
            os.environ.pop("RAY_AUTH_MODE") if saved is None else os.environ.update(RAY_AUTH_MODE=saved)


def lose_node(worker: subprocess.Popen, temp_dir: Path) -> None:
    """The worker node dies at once: its raylet, agents and replica processes."""
    end_group(worker, signal.SIGKILL, grace_s=0)
    kill_stragglers(str(temp_dir))


@pytest.fixture(scope="module")
def node_loss(cluster):
    """Load from CLIENTS clients; the worker node lost 4 s in; load until 4 s after the
    replacement replica runs. Returns the outcomes, the times, and the placements before/after."""
    url, _, head_node, worker, worker_dir = cluster
    before = engine_replicas()
    body = {"model": "tiny-llada-arith", "messages": [{"role": "user", "content": "21+21="}], "max_tokens": 32,
            "block_length": 8, "steps": 32}

    log, lost_at, recovered_at = load_through_outage(
        url, body, CLIENTS, lambda: lose_node(worker, worker_dir),
        lambda: wait_until(lambda: running(2) and set(engine_replicas().values()) == {head_node},
                           RECOVERY_TIMEOUT_S, "the lost replica was not replaced on the head"))
    return log, lost_at, recovered_at, before, engine_replicas(), head_node


def answered_by_replica(metrics_url: str) -> dict[str, float]:
    """The ingress's requests_total of answered requests, by engine replica (the ingress runs on the head)."""
    text = httpx.get(metrics_url, timeout=10).text
    answered: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "ray_fastdllm_requests_total" and s.labels["status"] in ("stop", "length"):
                answered[s.labels["replica"]] = answered.get(s.labels["replica"], 0) + s.value
    return answered


def test_replicas_were_on_both_nodes_and_both_answered(cluster, node_loss):
    _, _, _, before, after, head_node = node_loss
    assert len(set(before.values())) == 2 and head_node in before.values()
    deadline = time.monotonic() + 30  # Ray exports the ingress's counters every second or so
    while not set(before) | set(after) <= set(answered := answered_by_replica(cluster[1])):
        assert time.monotonic() < deadline, (before, after, answered)
        time.sleep(1)


def test_only_requests_on_the_lost_node_failed_and_retryably(node_loss):
    log, lost_at, recovered_at, *_ = node_loss
    failed = [o for o in log if o.status != 200]
    print(f"{len(log)} requests, {len(failed)} failed; replaced after {recovered_at - lost_at:.1f} s")
    assert failed, "the node loss caught no request in flight: the test proved nothing"
    for o in failed:
        assert o.status == 503 and o.retry_after and o.code in ("replica_failed", "overloaded"), o
        assert o.started < recovered_at and o.ended >= lost_at  # caught by the outage, not after it
    assert len([o for o in failed if o.started < lost_at]) <= ONGOING  # at most what the lost replica held


def test_the_head_kept_answering_and_took_the_lost_replica(node_loss):
    log, lost_at, recovered_at, before, after, head_node = node_loss
    assert any(o.status == 200 and lost_at < o.started and o.ended < recovered_at for o in log)
    assert set(after.values()) == {head_node} and len(after) == 2
    survivor = next(replica for replica, node in before.items() if node == head_node)
    assert survivor in after  # the head's replica was never restarted
    after_recovery = [o for o in log if o.started > recovered_at]
    assert len(after_recovery) >= CLIENTS and all(o.status == 200 for o in after_recovery)
