"""Model layer: the LLaDA and Dream networks, their configs, K/V cache and checkpoint I/O (pure torch)."""

from fastdllm_ray.model.checkpoint import load_model, load_tokenizer, save_checkpoint
from fastdllm_ray.model.config import LLaDAConfig
from fastdllm_ray.model.dream import DreamModel
from fastdllm_ray.model.dream_config import DreamConfig
from fastdllm_ray.model.kv_cache import PagedForward, PagedKVCache
from fastdllm_ray.model.llada import LLaDAModel
from fastdllm_ray.model.transformer import DiffusionTransformer
from fastdllm_ray.model.shipped import DEFAULT_MODEL_NAME, default_model_path

__all__ = ["DEFAULT_MODEL_NAME", "DiffusionTransformer", "DreamConfig", "DreamModel", "default_model_path", "PagedForward", "PagedKVCache", "LLaDAConfig", "LLaDAModel", "load_model", "load_tokenizer", "save_checkpoint"]
