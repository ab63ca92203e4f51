"""The models behind one ingress, routed by the request's `model`.

Each served model has its own engine deployment (replicas, sizes, device) and what the ingress
needs to turn its requests into token ids and decoding settings: the tokenizer, the limits of
its config and its family's decoding policy. Nothing here names a model family: the limits come
from the model layer's `load_config`, the rules from `policy_for` of the checkpoint's model_type,
so a new family joins by teaching those layers to read its checkpoint.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from fastdllm_ray.decoding import DecodingPolicy, policy_for
from fastdllm_ray.engine.engine import default_max_model_len
from fastdllm_ray.model import load_tokenizer
from fastdllm_ray.model.checkpoint import generation_config, load_config, resolve_checkpoint
from fastdllm_ray.serve.algorithms import FamilyAlgorithms, algorithms_of
from fastdllm_ray.serve.config import AppConfig
from fastdllm_ray.serve.convert import DEFAULT_MAX_TOKENS, PromptEncoder, RequestError
from fastdllm_ray.serve.replica import resolve_model, served_model_names

# a GenerationParams field a family takes -> the request fields that set it
_REQUEST_FIELDS = {"cache": ("use_cache", "use_dual_cache")}
STATUS_TIMEOUT_S = 5.0  # Serve's controller answers in milliseconds; past this /health says "not loaded"
STATUS_TTL_S = 2.0  # probes every few seconds share one status read


@dataclass
class ServedModel:
    name: str  # its name in metrics and logs
    aliases: list[str]  # the other names clients may send
    engine: Any  # the DeploymentHandle of its EngineReplica deployment
    tokenizer: Any
    encoder: PromptEncoder
    policy: DecodingPolicy
    model_type: str
    device: str
    max_model_len: int
    default_max_tokens: int
    request_timeout_s: float

    @property
    def algorithms(self) -> FamilyAlgorithms:
        return algorithms_of(self.policy)

    @property
    def settings(self) -> list[str]:
        """The request fields of its family's own settings (what /v1/models lists, and the
        playground shows)."""
        return sorted(field for name in self.policy.accepts for field in _REQUEST_FIELDS.get(name, (name,)))

    @classmethod
    def load(cls, config: AppConfig, engine, device: str) -> "ServedModel":
        checkpoint = resolve_checkpoint(resolve_model(config))
        model_config = load_config(checkpoint)
        longest = model_config.max_sequence_length
        tokenizer = load_tokenizer(checkpoint)
        name, *aliases = served_model_names(config)
        return cls(
            name=name, aliases=aliases, engine=engine, tokenizer=tokenizer,
            encoder=PromptEncoder(tokenizer, model_config.embedding_size, model_config.mask_token_id),
            policy=policy_for(model_config.model_type, model_config.mask_token_id),
            model_type=model_config.model_type, device=device,
            max_model_len=min(config.engine.max_model_len or default_max_model_len(longest), longest),
            # a model may ask for another default answer length than the server's 128 (the
            # shipped one was trained on 64-token answers)
            default_max_tokens=int(generation_config(checkpoint).get("max_new_tokens", DEFAULT_MAX_TOKENS)),
            request_timeout_s=config.request_timeout_s)


class ModelRouter:
    """Name (or alias) -> ServedModel for every model of an app config, in the config's order."""

    def __init__(self, config: AppConfig, engines: dict[str, Any], devices: dict[str, str] | None = None) -> None:
        models = []
        for model in config.model_configs():
            name = served_model_names(model)[0]
            models.append(ServedModel.load(model, engines[name], (devices or {}).get(name, model.device)))
        self.models = {model.name: model for model in models}
        self.names = {name: model for model in models for name in (model.name, *model.aliases)}
        self._status: tuple[float, dict[str, bool]] = (0.0, {})

    def __iter__(self):
        return iter(self.models.values())

    def route(self, name: str) -> ServedModel:
        """The model a request names; 400 model_not_found naming the served ones otherwise."""
        model = self.names.get(name)
        if model is None:
            served = ", ".join(repr(n) for n in self.names)
            raise RequestError(f"model: {name!r} is not served here (served: {served})",
                               param="model", code="model_not_found")
        return model

    async def loaded(self) -> dict[str, bool]:
        """Per model: whether its engine deployment has a running replica, from Serve's status
        (False when that cannot be read). Never raises: /health answers probes with it."""
        read_at, status = self._status
        if time.monotonic() - read_at > STATUS_TTL_S:
            try:
                status = await asyncio.wait_for(asyncio.to_thread(self._read_status), timeout=STATUS_TIMEOUT_S)
            except Exception:  # no controller (outside Serve), a timeout: nothing is known to be loaded
                status = {}
            self._status = (time.monotonic(), status)
        return {model.name: status.get(model.name, False) for model in self}

    def _read_status(self) -> dict[str, bool]:
        import ray
        from ray import serve

        if not ray.is_initialized():  # outside a cluster (serve.status would start one)
            return {}
        applications = serve.status().applications
        running = {}
        for model in self:
            app = applications.get(model.engine.app_name)
            deployment = app.deployments.get(model.engine.deployment_name) if app else None
            running[model.name] = bool(deployment and deployment.replica_states.get("RUNNING", 0) > 0)
        return running
