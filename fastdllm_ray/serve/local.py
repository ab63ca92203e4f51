"""The app on a local Ray cluster of this process, for scripts, notebooks and benchmarks: the
way `fastdllm-ray serve` starts it (commands.serve.start -> build_app), on free ports, with
Ray's Prometheus exporter on a known port."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

# Below Linux's ephemeral range (32768+), which the kernel also hands to outgoing connections
# (Ray opens many: one took an OS-chosen "free" port before Serve's proxy could bind it), and
# above Ray's worker ports (10002-19999).
_LOW, _HIGH = 20000, 32000
APP_START_TIMEOUT_S = 240  # a busy 2-core machine has taken over 120 s


def free_port() -> int:
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(_LOW, _HIGH)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in [{_LOW}, {_HIGH})")


@contextmanager
def local_app(config, num_cpus: int = 2, start_timeout_s: float = APP_START_TIMEOUT_S) -> Iterator[tuple[str, str]]:
    """Starts Ray and the app of `config` (an AppConfig); yields (base_url, metrics_url) once
    /health answers, and stops both on leaving."""
    import httpx
    import ray
    from ray import serve

    from fastdllm_ray.commands.serve import start

    metrics_port, http_port = free_port(), free_port()
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _metrics_export_port=metrics_port,
             namespace=f"fastdllm-local-{http_port}")
    try:
        url = start(config, host="127.0.0.1", port=http_port)
        deadline = time.monotonic() + start_timeout_s
        while httpx.get(f"{url}/health", timeout=10).status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the app did not become healthy within {start_timeout_s:g} s")
            time.sleep(0.5)
        yield url, f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        serve.shutdown()
        ray.shutdown()
