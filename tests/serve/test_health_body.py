"""/health and /generation/algorithms for an app of several models: the LLaDA OpenAI server's
fields at the top (the first model's; model_loaded only when every model's engine runs) and
each model's under `models`, its own family's algorithm names; a model whose engine is not
known to run is reported as not loaded, never as an error. (The served app is in
test_llada_server_compat.py.)"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from fastdllm_ray.serve.config import AppConfig
from fastdllm_ray.serve.health import algorithms_body, health_body
from fastdllm_ray.serve.models import ModelRouter
from tests.conftest import TINY_DREAM

CONFIG = AppConfig(device="cpu", models=[{"model_name": "tiny", "model_aliases": ["llada-8b-instruct"]},
                                         {"model": str(TINY_DREAM), "model_name": "dream"}])


def router() -> ModelRouter:
    # what build_app hands the ingress for each model: its engine deployment's handle (here
    # only the names /health looks it up by) and the device its replicas run on
    engines = {name: SimpleNamespace(app_name="fastdllm", deployment_name=f"EngineReplica-{name}")
               for name in ("tiny", "dream")}
    return ModelRouter(CONFIG, engines, {"tiny": "cpu", "dream": "cpu"})


def test_several_models_report_each_and_the_first_at_the_top():
    models = list(router())
    body = health_body(models, {"tiny": True, "dream": True})
    assert (body["status"], body["model_loaded"], body["model_type"], body["device"]) == ("healthy", True, "llada",
                                                                                          "cpu")
    assert body["default_algorithm"] == "dual_cache"
    assert [(m["name"], m["aliases"], m["model_type"]) for m in body["models"]] == [
        ("tiny", ["llada-8b-instruct"], "llada"), ("dream", [], "Dream")]
    assert health_body(models, {"tiny": True, "dream": False})["model_loaded"] is False


def test_algorithms_are_listed_per_model_with_availability():
    models = list(router())
    listed = algorithms_body(models, {"tiny": True, "dream": False})["algorithms"]
    assert [(a["model"], a["name"], a["available"]) for a in listed] == [
        ("tiny", "basic", True), ("tiny", "prefix_cache", True), ("tiny", "dual_cache", True),
        ("dream", "basic", False), ("dream", "prefix_cache", False), ("dream", "dual_cache", False)]


def test_without_a_running_serve_app_no_model_is_loaded():
    models = router()
    assert asyncio.run(models.loaded()) == {"tiny": False, "dream": False}
    assert models.route("llada-8b-instruct").name == "tiny"
