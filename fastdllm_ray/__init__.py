"""fastdllm-ray: serving masked-diffusion LLMs (LLaDA) with the Fast-dLLM accelerations."""

from __future__ import annotations

import importlib

# imported on first use (PEP 562), so that `fastdllm-ray chat` and the other commands that only
# talk to a server start without loading torch
_EXPORTS = {"Engine": "fastdllm_ray.engine", "EngineConfig": "fastdllm_ray.engine",
            "GenerationResult": "fastdllm_ray.engine", "generate": "fastdllm_ray.engine",
            "load_model": "fastdllm_ray.model", "load_tokenizer": "fastdllm_ray.model",
            "GenerationParams": "fastdllm_ray.params"}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fastdllm_ray' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
