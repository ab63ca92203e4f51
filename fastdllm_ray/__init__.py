"""fastdllm-ray: serving masked-diffusion LLMs (LLaDA) with the Fast-dLLM accelerations."""

from fastdllm_ray.engine import Engine, EngineConfig, GenerationResult, generate
from fastdllm_ray.model import load_model, load_tokenizer
from fastdllm_ray.params import GenerationParams

__all__ = ["Engine", "EngineConfig", "GenerationParams", "GenerationResult", "generate", "load_model", "load_tokenizer"]
__version__ = "0.1.0"
