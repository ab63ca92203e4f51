"""`fastdllm-ray serve`, run as the README says (its own process and Ray cluster), answers the
openai client with the shipped model and stops cleanly on Ctrl-C."""

from __future__ import annotations

import pytest
from openai import OpenAI

from fastdllm_ray.model.shipped import DEFAULT_MODEL_NAME
from serve_harness import cli_server

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]


def test_cli_serve_answers_the_openai_client_and_stops_on_ctrl_c(tmp_path):
    with cli_server(tmp_path / "serve.log", "--max-num-seqs", "2", "--num-cpus", "2") as server:
        client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)
        reply = client.chat.completions.create(model=DEFAULT_MODEL_NAME,  # the server's defaults
                                               messages=[{"role": "user", "content": "What is 2+2?"}])
        assert reply.choices[0].message.content.strip() == "2 + 2 = 4. The answer is 4."  # the trained model
        assert reply.choices[0].finish_reason == "stop"
    output = server.output()
    assert server.process.returncode == 0, output
    assert f"serving '{DEFAULT_MODEL_NAME}' at {server.url}/v1" in output and "stopping" in output
