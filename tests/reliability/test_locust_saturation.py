"""A 60 s headless locust run (through `fastdllm-ray loadtest`) at a concurrency above the
replica's slots: every accepted request is answered in full, and the report is written."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from fastdllm_ray.serve.config import AppConfig
from serve_harness import replica_stats, running_app

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

SLOTS = 4
USERS = 2 * SLOTS  # twice the live sequences the replica can batch: it never idles
ACCEPTED_TYPES = {"chat", "chat-stream", "completion", "completion-stream"}


@pytest.fixture(scope="module")
def base_url():
    config = AppConfig(engine={"max_num_seqs": SLOTS, "max_queue": 4 * SLOTS})
    with running_app(config) as (url, _):
        yield url


@pytest.fixture(scope="module")
def locust_run(base_url, tmp_path_factory):
    out = tmp_path_factory.mktemp("loadtest")
    cmd = [sys.executable, "-m", "fastdllm_ray.cli", "loadtest", "--base-url", base_url, "--users", str(USERS),
           "--run-time", "61s", "--stop-timeout", "30", "--out", str(out)]
    # locust (gevent) must not be imported into this process: it runs as a child
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=200)
    return done, out


def test_saturating_run_has_no_failed_accepted_request(locust_run):
    done, out = locust_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["duration_s"] >= 60
    assert summary["failed"] == 0, summary["failures_by_kind"]
    assert summary["accepted_ok"] >= USERS  # every client got answers, not only refusals
    assert summary["completion_tokens"] > 0 and summary["ttfc_p50_ms"] is not None


def test_report_is_written_with_a_row_per_scenario(locust_run):
    _, out = locust_run
    assert (out / "report.html").stat().st_size > 10_000
    rows = list(csv.DictReader((out / "locust_stats.csv").open()))
    accepted = [r for r in rows if r["Type"] in ACCEPTED_TYPES]
    names = {r["Name"] for r in accepted}
    assert {"chat-short-dual", "chat-stream-threshold", "completion-long-prefix"} <= names
    assert all(r["Failure Count"] == "0" for r in rows)
    assert sum(int(r["Request Count"]) for r in accepted) > 0
    assert any(r["Type"] == "TTFC" for r in rows)


def test_the_replica_was_saturated(locust_run):
    stats = replica_stats()
    assert stats["max_batch_size"] == SLOTS  # every slot was live at once
    assert stats["running"] == 0 and stats["waiting"] == 0  # nothing left behind after the run
    assert stats["finished"].get("error", 0) == 0


def test_request_count_mode_stops_after_that_many_answers(base_url, locust_run, tmp_path):
    # after the timed run (the module's app is idle again): --requests instead of --run-time
    cmd = [sys.executable, "-m", "fastdllm_ray.cli", "loadtest", "--base-url", base_url, "--users", "4",
           "--requests", "12", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["accepted_ok"] + summary["failed"] + summary["refused"] == 12
    assert summary["failed"] == 0 and (tmp_path / "report.html").exists()
