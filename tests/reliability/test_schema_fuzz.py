"""Schemathesis fuzzes every operation of the app's own OpenAPI document (a few hundred
generated requests in all, with a valid key) and no answer is a server error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastdllm_ray.model.shipped import DEFAULT_MODEL_NAME
from fastdllm_ray.serve.config import AppConfig
from serve_harness import replica_stats, running_app

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]  # the first test includes the app's start

KEY = "fuzz-key"
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.fixture(scope="module")
def base_url():
    # slots for the fuzzed requests that are valid; generous time for the largest of them on a CPU
    config = AppConfig(api_keys=[KEY], engine={"max_num_seqs": 8, "max_queue": 32}, request_timeout_s=240)
    with running_app(config) as (url, _):
        yield url


def fuzz(base_url: str, out: Path, mode: str, examples: int) -> tuple[subprocess.CompletedProcess, list[dict]]:
    cmd = [str(SCHEMATHESIS), "run", f"{base_url}/openapi.json", "--checks", "not_a_server_error",
           "--phases", "examples,coverage,fuzzing", "--mode", mode, "--max-examples", str(examples),
           "--seed", "20261123", "--header", f"Authorization: Bearer {KEY}",
           "--workers", "1", "--request-timeout", "280", "--max-failures", "5",
           # the same requests on every run and machine (no example database, no health check cutting a slow run short)
           "--generation-deterministic", "--suppress-health-check", "all",
           "--report", "ndjson", "--report-ndjson-path", str(out), "--warnings", "off"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS), "FASTDLLM_FUZZ_MODEL": DEFAULT_MODEL_NAME}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=270, env=env)
    events = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return done, events


def answers(events: list[dict]) -> list[tuple[str, int]]:
    """(method, status) of every request the ndjson report recorded (its interactions)."""
    found: list[tuple[str, int]] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("request"), dict) and isinstance(node.get("response"), dict):
                found.append((node["request"].get("method"), node["response"].get("status_code")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(events)
    return found


# negative mode breaks the schema on purpose (validators answer); positive mode keeps to it
# (so, with the hook's model name, requests reach the engine and are answered)
RUNS = [("all", 30, ("POST", 400)), ("positive", 40, ("POST", 200))]


@pytest.mark.parametrize("mode, examples, expected", RUNS, ids=[r[0] for r in RUNS])
def test_schema_fuzz_finds_no_server_error(base_url, tmp_path, mode, examples, expected):
    done, events = fuzz(base_url, tmp_path / "report.ndjson", mode, examples)
    assert done.returncode == 0, done.stdout[-4000:]
    seen = answers(events)
    codes = [status for _, status in seen]
    print(f"{mode}: {len(codes)} responses: " + ", ".join(f"{c}x{codes.count(c)}" for c in sorted(set(codes))))
    assert 100 <= len(codes) <= 1000  # a few hundred requests really went out
    assert not [c for c in codes if not isinstance(c, int) or c >= 500]
    assert expected in seen

def test_engine_stayed_sound(base_url):
    stats = replica_stats()
    assert stats["finished"].get("error", 0) == 0 and stats["loop_failures"] == 0
