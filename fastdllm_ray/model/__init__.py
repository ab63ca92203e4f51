"""Model layer: the LLaDA network, its config, K/V cache and checkpoint I/O (pure torch)."""

from fastdllm_ray.model.checkpoint import load_model, load_tokenizer, save_checkpoint
from fastdllm_ray.model.config import LLaDAConfig
from fastdllm_ray.model.kv_cache import CacheView, KVCache
from fastdllm_ray.model.llada import LLaDAModel

__all__ = ["CacheView", "KVCache", "LLaDAConfig", "LLaDAModel", "load_model", "load_tokenizer", "save_checkpoint"]
