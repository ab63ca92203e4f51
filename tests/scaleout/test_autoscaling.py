"""Autoscaling follows the load: a locust ramp (loadtest/ramp.py) to 8 clients drives the
1..4-replica deployment (target 2 ongoing requests a replica) up, as Serve's status and the
replica labels of our metrics show; when the peak ends and one client is left, it shrinks back
to 1 replica within its downscale delay (plus the look-back window and Serve's control loop),
and every accepted request is answered in full: the replicas removed under load drain first."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tests.scaleout.scaleout_models import APP, AUTOSCALED, AUTOSCALING, engine_deployment

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
# the peak outlasts the start of 3 replicas at once on a busy 2-core machine (25 s measured, from
# ~8 s in); the tail sees the scale-down begin with requests still arriving
RAMP = {"ramp_users": 8, "ramp_s": 2, "hold_s": 36, "tail_users": 1, "tail_s": 10}
SCENARIO = {"name": "chat-autoscaled", "endpoint": "chat", "stream": False, "weight": 1, "prompt_chars": 16,
            "max_tokens": 16, "fast_dllm": {"block_length": 8, "steps": 16}}
# after the peak: the look-back window empties, the delay passes, the drained replicas stop
SCALE_DOWN_SLACK_S = 25


def replica_states() -> dict[str, int]:
    from ray import serve

    return dict(serve.status().applications[APP].deployments[engine_deployment(AUTOSCALED)].replica_states)


def locust(url: str, out: Path) -> subprocess.Popen:
    scenarios = out / "scenarios.yaml"
    scenarios.write_text(yaml.safe_dump({"scenarios": [SCENARIO]}))
    shape = [arg for key, value in RAMP.items() for arg in (f"--{key.replace('_', '-')}", str(value))]
    # locust (gevent) must not be imported into this process: it runs as a child
    return subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "ramp.py"), "--headless", "--only-summary",
         "-H", url, "--model", AUTOSCALED, "--scenarios", str(scenarios), "--summary-json", str(out / "summary.json"),
         "--stop-timeout", "60", "--loglevel", "WARNING", *shape],
        stdout=(out / "locust.log").open("w"), stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def ramp(app, tmp_path_factory):
    """Runs the ramp; returns the replica count over time (seconds from the start), when the peak
    ended, locust's summary, and the fates the run left."""
    out = tmp_path_factory.mktemp("ramp")
    before, _ = app.fates()
    started = time.monotonic()
    run = locust(app.url, out)
    timeline = []
    while run.poll() is None or timeline[-1][1] != {"RUNNING": 1}:
        timeline.append((time.monotonic() - started, replica_states()))
        assert timeline[-1][0] < 240, f"no return to 1 replica: {timeline[-20:]}"
        time.sleep(0.5)
    assert run.returncode == 0, (out / "locust.log").read_text()[-3000:]
    after, _ = app.fates()
    after.subtract(before)
    peak_end = RAMP["ramp_s"] + RAMP["hold_s"]  # from locust's start, which came after `started`
    return timeline, peak_end, yaml.safe_load((out / "summary.json").read_text()), +after


def test_the_ramp_adds_replicas(ramp):
    timeline, peak_end, _, gained = ramp
    print("replicas over time:", [(round(t), states) for t, states in timeline[::4]])
    # Serve's status: the autoscaler asked for the most replicas, and they ran
    assert max(sum(states.values()) for t, states in timeline if t <= peak_end) == AUTOSCALING["max_replicas"]
    assert max(states.get("RUNNING", 0) for _, states in timeline) >= 3
    replicas = {replica for model, replica, _ in gained if model == AUTOSCALED}
    assert len(replicas) >= 2  # our metrics: replicas it added answered requests


def test_after_the_peak_it_is_back_to_one_replica_within_the_delay(ramp):
    timeline, peak_end, _, _ = ramp
    back_to_one = next(t for t, states in timeline if t > peak_end and states == {"RUNNING": 1})
    assert back_to_one - peak_end <= AUTOSCALING["downscale_delay_s"] + SCALE_DOWN_SLACK_S


def test_no_accepted_request_was_lost(ramp):
    _, _, summary, gained = ramp
    assert summary["failed"] == 0, summary["failures_by_kind"]
    assert summary["accepted_ok"] > 0 and summary["refused"] == 0
    statuses = {status for model, _, status in gained if model == AUTOSCALED}
    answered = sum(n for (model, _, status), n in gained.items() if model == AUTOSCALED)
    assert statuses <= {"stop", "length"} and answered == summary["accepted_ok"]
