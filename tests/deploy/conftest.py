"""A real `serve run deployments/tiny-cpu.yaml` on a private Ray head, shared by the tests
that need a running app (it answers HTTP and exports Prometheus metrics).

Other Ray users may share this machine, so nothing here uses a default port, the default
temp dir, `ray stop` or RAY_ADDRESS discovery: the head gets free ports and its own temp
dir, and teardown ends only the processes this fixture started (by process group, then
any straggler whose command line names our temp dir)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from tests.deploy.ray_processes import BIN, START_TIMEOUT_S, answers, end_group, kill_stragglers, port_open, private_env, wait_for
from tests.net import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RunningApp:
    base_url: str
    metrics_url: str
    model_name: str
    log: Path


@pytest.fixture(scope="package")
def tiny_cpu_app() -> Iterator[RunningApp]:
    # short path: Ray puts unix sockets under it, and those are limited to 107 bytes
    workdir = Path(tempfile.mkdtemp(prefix="fdr-", dir="/tmp"))
    log = workdir / "run.log"
    ports = {name: free_port() for name in ("gcs", "dashboard", "client", "agent", "metrics", "http")}
    config = yaml.safe_load((ROOT / "deployments" / "tiny-cpu.yaml").read_text())
    # the one change to the shipped file: a free port on loopback instead of 0.0.0.0:8000
    config["http_options"] = {"host": "127.0.0.1", "port": ports["http"]}
    config_path = workdir / "tiny-cpu.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = private_env()
    processes: list[subprocess.Popen] = []
    with open(log, "w") as out:
        try:
            head = subprocess.Popen(
                [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2", "--num-gpus=0",
                 f"--port={ports['gcs']}",
                 f"--dashboard-port={ports['dashboard']}", "--dashboard-host=127.0.0.1",
                 f"--ray-client-server-port={ports['client']}",
                 f"--dashboard-agent-listen-port={ports['agent']}",
                 f"--metrics-export-port={ports['metrics']}", f"--temp-dir={workdir / 'ray'}"],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            processes.append(head)
            deadline = time.monotonic() + START_TIMEOUT_S
            wait_for(lambda: port_open(ports["gcs"]), deadline, processes, log)
            serve = subprocess.Popen(
                [str(BIN / "serve"), "run", "--address", f"127.0.0.1:{ports['gcs']}", str(config_path)],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True)
            processes.append(serve)
            base_url = f"http://127.0.0.1:{ports['http']}"
            wait_for(lambda: answers(base_url + "/v1/models"), deadline, processes, log)
            yield RunningApp(base_url, f"http://127.0.0.1:{ports['metrics']}/metrics",
                             config["applications"][0]["args"]["model_name"], log)
        finally:
            # `serve run` first (a graceful Serve shutdown is moot: the cluster goes next),
            # then `ray start --block`, which takes its daemons down with it
            for process in reversed(processes):
                end_group(process, signal.SIGTERM, grace_s=10)
            kill_stragglers(str(workdir))
            shutil.rmtree(workdir, ignore_errors=True)
