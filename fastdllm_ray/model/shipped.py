"""The model that ships inside the package: a tiny LLaDA trained on arithmetic chat
(fastdllm_ray/train/), the default of `serve`, `generate` and `eval` when no model is given."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL_NAME = "tiny-llada-arith"


def default_model_path() -> Path:
    """The shipped checkpoint directory (config.json, model.safetensors, tokenizer files)."""
    return Path(__file__).resolve().parent.parent / "assets" / DEFAULT_MODEL_NAME
