"""The bodies of GET /health and GET /generation/algorithms, with the LLaDA OpenAI server's
fields (NeMo-RL's xp/llada_api: status, model_loaded, device, model_type,
available_generation_algorithms, default_algorithm; {"algorithms": [{name, description,
available}]}), so its clients and scripts read ours unchanged. That server serves one model; we
may serve several: the top-level fields are the first model's (model_loaded: every model's),
and `models` holds each one's.
"""

from __future__ import annotations

from typing import Any


def _model_health(model, loaded: bool) -> dict[str, Any]:
    algorithms = model.algorithms
    return {"name": model.name, "aliases": model.aliases, "model_loaded": loaded, "device": model.device,
            "model_type": model.model_type,
            "available_generation_algorithms": [a.name for a in algorithms.algorithms],
            "default_algorithm": algorithms.default.name}


def health_body(models: list, loaded: dict[str, bool]) -> dict[str, Any]:
    """`models`: the ServedModels in config order; `loaded`: name -> an engine replica is running."""
    each = [_model_health(model, loaded.get(model.name, False)) for model in models]
    first = {key: value for key, value in each[0].items() if key not in ("name", "aliases")}
    # "healthy": the server answers (as the seed server's); whether a model can answer yet is model_loaded
    return {"status": "healthy", **first, "model_loaded": all(m["model_loaded"] for m in each), "models": each}


def algorithms_body(models: list, loaded: dict[str, bool]) -> dict[str, Any]:
    """One entry per model and algorithm; `available`: the model's engine has a running replica."""
    return {"algorithms": [
        {"name": a.name, "description": a.description, "available": loaded.get(model.name, False),
         "aliases": list(a.aliases), "default": a.name == model.algorithms.default.name, "model": model.name}
        for model in models for a in model.algorithms.algorithms]}
