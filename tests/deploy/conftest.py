"""A real `serve run deployments/tiny-cpu.yaml` on a private Ray head, shared by the tests
that need a running app (it answers HTTP and exports Prometheus metrics).

Other Ray users may share this machine, so nothing here uses a default port, the default
temp dir, `ray stop` or RAY_ADDRESS discovery: the head gets free ports and its own temp
dir, and teardown ends only the processes this fixture started (by process group, then
any straggler whose command line names our temp dir)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml
from tests.net import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
START_TIMEOUT_S = 75


@dataclass(frozen=True)
class RunningApp:
    base_url: str
    metrics_url: str
    model_name: str
    log: Path


def _wait_for(predicate, deadline: float, processes: list[subprocess.Popen], log: Path) -> None:
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                pytest.fail(f"{process.args[:2]} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if predicate():
            return
        time.sleep(0.5)
    pytest.fail(f"not up after {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _end_group(process: subprocess.Popen, first: int, grace_s: float) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, first)
        process.wait(grace_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(5)


def _kill_stragglers(marker: str) -> None:
    """Ray daemons that left our process group still carry our temp dir in their arguments."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


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
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    # token auth switches itself on when ~/.ray/auth_token exists, for `ray start` but not
    # for `serve run`'s client: a private loopback cluster needs none
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_metrics_report_interval_ms="1000", RAY_AUTH_MODE="disabled")
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
            _wait_for(lambda: _port_open(ports["gcs"]), deadline, processes, log)
            serve = subprocess.Popen(
                [str(BIN / "serve"), "run", "--address", f"127.0.0.1:{ports['gcs']}", str(config_path)],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True)
            processes.append(serve)
            base_url = f"http://127.0.0.1:{ports['http']}"
            _wait_for(lambda: _answers(base_url + "/v1/models"), deadline, processes, log)
            yield RunningApp(base_url, f"http://127.0.0.1:{ports['metrics']}/metrics",
                             config["applications"][0]["args"]["model_name"], log)
        finally:
            # `serve run` first (a graceful Serve shutdown is moot: the cluster goes next),
            # then `ray start --block`, which takes its daemons down with it
            for process in reversed(processes):
                _end_group(process, signal.SIGTERM, grace_s=10)
            _kill_stragglers(str(workdir))
            shutil.rmtree(workdir, ignore_errors=True)
