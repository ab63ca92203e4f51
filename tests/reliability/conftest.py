"""Reliability and security suite: real local Ray clusters and apps, driven like a client
would. The serving tests' harness (tests/serve/serve_harness.py) starts them."""

from __future__ import annotations

import sys
from pathlib import Path

# serve_harness lives beside the serving tests; share it rather than copy it
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
