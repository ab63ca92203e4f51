"""Engine layer: sequences, scheduler, model runner and the continuous-batching loop (no Ray, no HTTP)."""

from fastdllm_ray.engine.async_engine import AsyncEngine
from fastdllm_ray.engine.engine import Engine, EngineConfig, QueueFullError
from fastdllm_ray.engine.generate import generate
from fastdllm_ray.engine.outputs import BlockOutput, GenerationResult

__all__ = ["AsyncEngine", "BlockOutput", "Engine", "EngineConfig", "GenerationResult", "QueueFullError", "generate"]
