"""Ports for the servers the tests start."""

from __future__ import annotations

import random
import socket

# Below Linux's ephemeral range (32768+), which the kernel also hands to outgoing connections
# (Ray opens many: one took an OS-chosen "free" port before Serve's proxy could bind it), and
# above Ray's worker ports (10002-19999).
_LOW, _HIGH = 20000, 32000


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
