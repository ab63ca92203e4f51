"""Shared fixtures: the reference vectors and the tiny real-format checkpoint they came from."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from fastdllm_ray.serve.ray_env import apply_serve_env_defaults

REFDATA = Path(__file__).parent / "fixtures" / "refdata"
REF_CHECKPOINT = REFDATA / "checkpoint"

# The test models are tiny: a second intra-op thread gains nothing, and on a busy machine
# OpenMP threads waiting on each other make a forward 10-100x slower.
torch.set_num_threads(1)
# every Ray cluster a test starts (ray.init here, `ray start` / `serve run` subprocesses) gets the
# settings `fastdllm-ray serve` gives its own: Serve's proxy starts late on a busy CI machine
apply_serve_env_defaults()
# and no token auth, for the whole session: Ray switches a new GCS to token auth when
# ~/.ray/auth_token exists (a `ray start` in an earlier test can leave one), while this process's
# Ray client keeps the auth mode it first read; two tests once set "disabled" only for their own
# clusters, and every later ray.init here failed ("Failed to start GCS", InvalidAuthToken: CI)
os.environ["RAY_AUTH_MODE"] = "disabled"


@pytest.fixture(scope="session")
def reference() -> dict:
    return json.loads((REFDATA / "reference.json").read_text())


@pytest.fixture(scope="session")
def _ref_model_session():
    from fastdllm_ray import load_model

    return load_model(REF_CHECKPOINT)


@pytest.fixture
def ref_model(_ref_model_session, monkeypatch):
    """The refdata checkpoint (float32, CPU) with no end tokens, as the refdata assumes;
    a test may set `end_token_ids` freely: it is restored afterwards."""
    monkeypatch.setattr(_ref_model_session, "end_token_ids", ())
    return _ref_model_session


DREAM_REFDATA = Path(__file__).parent / "fixtures" / "refdata-dream"
DREAM_CHECKPOINT = DREAM_REFDATA / "checkpoint"


@pytest.fixture(scope="session")
def dream_reference() -> dict:
    return json.loads((DREAM_REFDATA / "reference.json").read_text())


@pytest.fixture(scope="session")
def _dream_model_session():
    from fastdllm_ray import load_model

    return load_model(DREAM_CHECKPOINT)


@pytest.fixture
def dream_model(_dream_model_session, monkeypatch):
    """The Dream refdata checkpoint (float32, CPU) with no end tokens, as the refdata assumes."""
    monkeypatch.setattr(_dream_model_session, "end_token_ids", ())
    return _dream_model_session

TINY_DREAM = Path(__file__).parent / "fixtures" / "tiny-dream"  # random weights, Dream's tokenizer shape
TINY_V2 = Path(__file__).parent / "fixtures" / "tiny-v2"  # random weights, Fast-dLLM v2 format (make_tiny_v2.py)
TINY_LLADA2 = Path(__file__).parent / "fixtures" / "tiny-llada2"  # random weights, LLaDA2.0 format (make_tiny_llada2)

V2_REFDATA = Path(__file__).parent / "fixtures" / "refdata-v2"
V2_CHECKPOINT = V2_REFDATA / "checkpoint"


@pytest.fixture(scope="session")
def v2_reference() -> dict:
    return json.loads((V2_REFDATA / "reference.json").read_text())


@pytest.fixture(scope="session")
def v2_model():
    """The Fast-dLLM v2 refdata checkpoint (float32, CPU); its stop id 201 is its end token."""
    from fastdllm_ray import load_model

    return load_model(V2_CHECKPOINT)


@pytest.fixture(scope="session")
def llada2_model():
    """The LLaDA2.0 refdata checkpoint (float32, CPU)."""
    from fastdllm_ray import load_model

    return load_model(Path(__file__).parent / "fixtures" / "refdata-llada2" / "checkpoint")
