"""`fastdllm-ray serve`, run as the README says (its own process and Ray cluster), answers the
openai client with the shipped model and stops cleanly on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from fastdllm_ray.model.shipped import DEFAULT_MODEL_NAME
from serve_harness import APP_START_TIMEOUT_S, free_port

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]


def cli() -> list[str]:
    script = Path(sys.executable).with_name("fastdllm-ray")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fastdllm_ray.cli"]


def test_cli_serve_answers_the_openai_client_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    log = (tmp_path / "serve.log").open("w+")  # a file, not a pipe: Ray's logging cannot fill it and block
    proc = subprocess.Popen([*cli(), "serve", "--port", str(port), "--max-num-seqs", "2", "--num-cpus", "2"],
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + APP_START_TIMEOUT_S
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "the server did not come up"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)
        while "Ctrl-C stops" not in (tmp_path / "serve.log").read_text():  # deployed: the banner is out
            assert time.monotonic() < deadline, "the server did not say it was serving"
            time.sleep(0.5)
        reply = client.chat.completions.create(model=DEFAULT_MODEL_NAME,  # the server's defaults
                                               messages=[{"role": "user", "content": "What is 2+2?"}])
        assert reply.choices[0].message.content.strip() == "2 + 2 = 4. The answer is 4."  # the trained model
        assert reply.choices[0].finish_reason == "stop"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            returncode = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    output = (tmp_path / "serve.log").read_text()
    assert returncode == 0, output
    assert f"serving '{DEFAULT_MODEL_NAME}' at http://127.0.0.1:{port}/v1" in output and "stopping" in output
