"""The models that ship inside the package, trained on arithmetic chat by fastdllm_ray/train/:
a tiny LLaDA (the default of `serve`, `generate` and `eval` when no model is given). Their
names work wherever a checkpoint is named (`serve --model tiny-llada-arith`)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL_NAME = "tiny-llada-arith"
# tiny-dream-arith and tiny-v2-arith have recipes (train/recipes.py) but ship once they answer as
# well (issue 24: >= 95% held out); CPU training alone did not get them there
SHIPPED_MODELS = ("tiny-llada-arith",)
ASSETS = Path(__file__).resolve().parent.parent / "assets"


def shipped_model_path(name: str = DEFAULT_MODEL_NAME) -> Path:
    """A shipped checkpoint directory (config.json, model.safetensors, tokenizer files)."""
    if name not in SHIPPED_MODELS:
        raise ValueError(f"model: {name!r} is not a shipped model ({', '.join(SHIPPED_MODELS)})")
    return ASSETS / name


def default_model_path() -> Path:
    return shipped_model_path(DEFAULT_MODEL_NAME)


def resolve_shipped(model: str) -> str:
    """A shipped model's name as its directory; anything else (a local directory, which wins
    over a shipped name, or a hub id) unchanged."""
    if model in SHIPPED_MODELS and not Path(model).exists():
        return str(shipped_model_path(model))
    return model
