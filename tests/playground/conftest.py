"""One app for the playground tests (step streaming over the API, the chat CLI in a real
terminal, the web page in a real browser), started as `fastdllm-ray serve` starts it, with an
API key so that every client proves it sends one."""

from __future__ import annotations

import pytest

from fastdllm_ray.serve.config import AppConfig
from tests.serve.serve_harness import running_app

API_KEY = "playground-test-key"


@pytest.fixture(scope="package")
def base_url():
    config = AppConfig(api_keys=[API_KEY], engine={"max_num_seqs": 4, "max_queue": 8})
    with running_app(config) as (url, _):
        yield url
