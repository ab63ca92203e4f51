"""Data parallel the way lm-eval does it: `accelerate launch` with 2 CPU processes, each one rank
with its own engine, documents split by rank and results gathered on rank 0 — here through
`fastdllm-ray eval --tasks`, which hands its settings to lm-eval the same way `lm_eval --model
fastdllm` does (without the lm_eval CLI's tens of seconds indexing its ~15k built-in tasks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness_run import ANSWERS_BOUND, MC_ARGS, MC_DOCS, accuracy

from tests.net import free_port

pytestmark = pytest.mark.timeout(420)
DOCS = 8  # 4 per rank


def test_two_processes_split_the_documents_and_score_as_one_does(tmp_path, direct_generation, direct_choice):
    assert MC_DOCS == DOCS and MC_ARGS["mc_num"] == 8
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               "-m", "fastdllm_ray.cli", "eval", "--tasks", "tiny_arith,tiny_arith_mc", "--use-dual-cache",
               "--threshold", "0.9", "--block-length", "32", "--limit", str(DOCS), "--mc-num", "8",
               "--device", "cpu", "--out-dir", str(tmp_path)]
    # ACCELERATE_USE_CPU: torchrun's processes form a gloo group on the CPU (no GPU here)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=tmp_path, env=env)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    assert "rank 0: 4 requests" in log and "rank 1: 4 requests" in log  # each rank decoded its half
    results = json.loads((tmp_path / "lm-eval-results.json").read_text())["results"]  # gathered on rank 0
    assert results["tiny_arith"]["sample_len"] == DOCS
    assert results["tiny_arith"]["exact_match,answer"] == accuracy(direct_generation, "tiny_arith", DOCS)
    assert results["tiny_arith"]["exact_match,answer"] >= ANSWERS_BOUND
    # log-likelihoods are seeded per request, so the split changes nothing
    assert results["tiny_arith_mc"]["acc,none"] == accuracy(direct_choice, "tiny_arith_mc", DOCS)
