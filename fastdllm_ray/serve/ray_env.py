"""Ray Serve settings we give a Ray cluster we start ourselves (`fastdllm-ray serve` without
--address). Ray's processes read them from the environment they inherit from the process that
runs `ray.init`, so they must be set before it; a value already in the environment wins.

For a cluster started elsewhere (`ray start`, KubeRay), set them in that cluster's environment."""

from __future__ import annotations

import os

SERVE_ENV_DEFAULTS = {
    # Serve gives its HTTP proxy three readiness checks of this many seconds, then kills it and
    # starts another; `serve.start` waits 60 s for one. Ray's 5 s is shorter than a proxy's start
    # on a busy machine: on 2 cores kept busy by other work, every start failed this way (3 of 3)
    # and none did with 30 s (3 of 3).
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",
}


def apply_serve_env_defaults() -> None:
    for key, value in SERVE_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
