"""Ray processes a test starts itself (`ray start`, `serve run`) on a machine other Ray users
share: free ports, a private temp dir, and teardown of exactly what the test started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 75


def private_env(**extra: str) -> dict[str, str]:
    """The environment of a private cluster's processes: never RAY_ADDRESS discovery."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    # token auth switches itself on when ~/.ray/auth_token exists, for `ray start` but not
    # for `serve run`'s client: a private loopback cluster needs none
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_metrics_report_interval_ms="1000", RAY_AUTH_MODE="disabled",
               **extra)
    return env


def wait_for(predicate, deadline: float, processes: list[subprocess.Popen], log: Path) -> None:
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                pytest.fail(f"{process.args[:2]} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if predicate():
            return
        time.sleep(0.5)
    pytest.fail(f"not up after {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def end_group(process: subprocess.Popen, first: int, grace_s: float) -> None:
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


def kill_stragglers(marker: str) -> None:
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
