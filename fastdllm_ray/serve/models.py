"""The models behind one ingress, routed by the request's `model`.

Each served model has its own engine deployment (replicas, sizes, device) and what the ingress
needs to turn its requests into token ids: the tokenizer and the limits of its config. Nothing
here names a model family: the limits come from the model layer's `load_config`, so a new
family joins by teaching the model layer to read its checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastdllm_ray.engine.engine import default_max_model_len
from fastdllm_ray.model import load_tokenizer
from fastdllm_ray.model.checkpoint import generation_config, load_config, resolve_checkpoint
from fastdllm_ray.serve.config import AppConfig
from fastdllm_ray.serve.convert import DEFAULT_MAX_TOKENS, PromptEncoder, RequestError
from fastdllm_ray.serve.replica import resolve_model, served_model_name


@dataclass
class ServedModel:
    name: str
    engine: Any  # the DeploymentHandle of its EngineReplica deployment
    tokenizer: Any
    encoder: PromptEncoder
    max_model_len: int
    default_max_tokens: int
    request_timeout_s: float

    @classmethod
    def load(cls, config: AppConfig, engine) -> "ServedModel":
        checkpoint = resolve_checkpoint(resolve_model(config))
        model_config = load_config(checkpoint)
        longest = model_config.max_sequence_length
        tokenizer = load_tokenizer(checkpoint)
        return cls(
            name=served_model_name(config), engine=engine, tokenizer=tokenizer,
            encoder=PromptEncoder(tokenizer, model_config.embedding_size, model_config.mask_token_id),
            max_model_len=min(config.engine.max_model_len or default_max_model_len(longest), longest),
            # a model may ask for another default answer length than the server's 128 (the
            # shipped one was trained on 64-token answers)
            default_max_tokens=int(generation_config(checkpoint).get("max_new_tokens", DEFAULT_MAX_TOKENS)),
            request_timeout_s=config.request_timeout_s)


class ModelRouter:
    """Name -> ServedModel for every model of an app config, in the config's order."""

    def __init__(self, config: AppConfig, engines: dict[str, Any]) -> None:
        models = [ServedModel.load(model, engines[served_model_name(model)]) for model in config.model_configs()]
        self.models = {model.name: model for model in models}

    def __iter__(self):
        return iter(self.models.values())

    def route(self, name: str) -> ServedModel:
        """The model a request names; 400 model_not_found naming the served ones otherwise."""
        model = self.models.get(name)
        if model is None:
            served = ", ".join(repr(n) for n in self.models)
            raise RequestError(f"model: {name!r} is not served here (served: {served})",
                               param="model", code="model_not_found")
        return model
