"""The direct backend's results on the local tasks, computed once and compared against by the
accelerate and server paths."""

from __future__ import annotations

import pytest
from harness_run import FAST, GEN_DOCS, MC_ARGS, MC_DOCS, evaluate


@pytest.fixture(scope="session")
def direct_generation() -> dict:
    return evaluate("fastdllm", FAST, ["tiny_arith"], GEN_DOCS, batch_size=16)


@pytest.fixture(scope="session")
def direct_choice() -> dict:
    args = ",".join(f"{k}={v}" for k, v in MC_ARGS.items())
    return evaluate("fastdllm", f"cache=dual,{args}", ["tiny_arith_mc"], MC_DOCS, batch_size=16)
