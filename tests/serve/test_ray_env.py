"""The Ray Serve settings a cluster we start gets: names Ray Serve really reads (a rename in a
Ray release would silently drop them), applied only where the environment has no value."""

from __future__ import annotations

import os
import subprocess
import sys

from fastdllm_ray.serve.ray_env import SERVE_ENV_DEFAULTS

READ_BY_SERVE = """
from fastdllm_ray.serve.ray_env import apply_serve_env_defaults
apply_serve_env_defaults()
from ray.serve._private import constants
print(constants.PROXY_READY_CHECK_TIMEOUT_S)
"""


def serve_constant(**env: str) -> str:
    clean = {key: value for key, value in os.environ.items() if key not in SERVE_ENV_DEFAULTS}
    run = subprocess.run([sys.executable, "-c", READ_BY_SERVE], env={**clean, **env}, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_serve_reads_our_proxy_ready_timeout_and_an_operators_value_wins():
    assert serve_constant() == "30.0"  # Ray's own default is 5.0
    assert serve_constant(RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S="12") == "12.0"
