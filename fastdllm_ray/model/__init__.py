"""Model layer: the networks of each model family, their configs, K/V cache and checkpoint I/O (pure torch).

Every module of this package is imported here, so each family's network registers itself by
subclassing DiffusionTransformer (model/transformer.py names none): a new family is a new module.
"""

import importlib
import pkgutil

from fastdllm_ray.model.checkpoint import load_model, load_tokenizer, save_checkpoint
from fastdllm_ray.model.config import LLaDAConfig
from fastdllm_ray.model.dream import DreamModel
from fastdllm_ray.model.dream_config import DreamConfig
from fastdllm_ray.model.kv_cache import PagedForward, PagedKVCache
from fastdllm_ray.model.llada import LLaDAModel
from fastdllm_ray.model.transformer import DiffusionTransformer
from fastdllm_ray.model.shipped import DEFAULT_MODEL_NAME, default_model_path

__all__ = ["DEFAULT_MODEL_NAME", "DiffusionTransformer", "DreamConfig", "DreamModel", "default_model_path", "PagedForward", "PagedKVCache", "LLaDAConfig", "LLaDAModel", "load_model", "load_tokenizer", "save_checkpoint"]

for _module in pkgutil.iter_modules(__path__):  # the families register as they are imported
    importlib.import_module(f"{__name__}.{_module.name}")
