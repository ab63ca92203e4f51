"""build_app: AppConfig -> a Ray Serve application (ingress -> engine replicas of each model).

`import_path: fastdllm_ray.serve.builder:build_app` with the AppConfig as `args` in a Serve
config file, the `fastdllm-ray serve` CLI and the KubeRay RayService all come through here.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Optional, Union

from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from fastdllm_ray.serve.config import AppConfig
from fastdllm_ray.serve.ingress import OpenAIIngress
from fastdllm_ray.serve.prefix_router import PrefixAffinityRouter, imbalance_for
from fastdllm_ray.serve.replica import EngineReplica, resolve_model, served_model_name, served_model_names

HEALTH_CHECK_PERIOD_S = 10


def _cluster_has_gpus() -> bool:
    import ray

    if ray.is_initialized():
        return ray.cluster_resources().get("GPU", 0) > 0
    import torch

    return torch.cuda.is_available()


def resolve_placement(config: AppConfig) -> AppConfig:
    """Fixes `device` and the GPUs per replica: one GPU per replica on cuda, none on the CPU."""
    device = config.device
    if device == "auto":
        wants_gpu = config.num_gpus_per_replica is None or config.num_gpus_per_replica > 0
        device = "cuda" if wants_gpu and _cluster_has_gpus() else "cpu"
    gpus = config.num_gpus_per_replica
    if gpus is None:
        gpus = 1 if device == "cuda" else 0
    return config.model_copy(update={"device": device, "num_gpus_per_replica": gpus})


@functools.lru_cache(maxsize=None)
def checkpoint_model_type(model: str) -> Optional[str]:
    """config.json's model_type of a local checkpoint, or of a hub id's config.json where this
    machine's HF cache has it; None otherwise (never a download: the replicas fetch the model)."""
    path = Path(model).expanduser()
    try:
        if path.is_dir():
            config_file = path / "config.json"
        else:
            from huggingface_hub import hf_hub_download

            config_file = Path(hf_hub_download(model, "config.json", local_files_only=True))
        return json.loads(config_file.read_text()).get("model_type")
    except Exception:  # not cached, not a hub id, no config: the replicas will know
        return None


def routes_by_prefix(config: AppConfig) -> bool:
    """Whether this config's engines get the prefix router: routing and sharing on, and a family
    whose decoding policy shares (block-diffusion), or one the builder cannot read offline (then
    the replicas say whether they share; LLaDA and Dream replicas never do)."""
    if not (config.prefix_routing and config.engine.prefix_sharing):
        return False
    import fastdllm_ray.decoding  # noqa: F401  (every family registers its policy on import)
    from fastdllm_ray.decoding.policy import registered_policies

    model_type = checkpoint_model_type(resolve_model(config))
    policy = registered_policies().get(model_type)
    return model_type is None or policy is None or policy.shares_prefix


def replica_options(config: AppConfig) -> dict[str, Any]:
    """Serve options of the engine deployment, sized from the engine's capacity."""
    engine = config.engine
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": config.num_cpus_per_replica,
                              "num_gpus": config.num_gpus_per_replica or 0},
        # live slots + engine queue: the engine answers 503 itself only beyond both
        "max_ongoing_requests": config.max_ongoing_requests or engine.max_num_seqs + engine.max_queue,
        # held by Serve's router (where the autoscaler sees them); beyond it, 503 at once
        "max_queued_requests": config.max_queued_requests or engine.max_queue,
        "health_check_period_s": HEALTH_CHECK_PERIOD_S,
        # a replica being scaled down or redeployed finishes what it holds before it stops: an
        # accepted request may run for up to request_timeout_s (Serve's default waits 20 s)
        "graceful_shutdown_timeout_s": config.request_timeout_s + HEALTH_CHECK_PERIOD_S,
    }
    if routes_by_prefix(config):  # else Serve's power of two choices, as ever
        options["request_router_config"] = RequestRouterConfig(
            request_router_class=PrefixAffinityRouter,
            request_router_kwargs={"imbalance": imbalance_for(engine.max_num_seqs)})
    if config.num_replicas is not None:
        options["num_replicas"] = config.num_replicas
    else:
        scaling = config.autoscaling
        options["autoscaling_config"] = {
            "min_replicas": scaling.min_replicas,
            "initial_replicas": max(1, scaling.min_replicas),
            "max_replicas": scaling.max_replicas,
            "target_ongoing_requests": scaling.target_ongoing_requests or engine.max_num_seqs,
        }
        for delay in ("upscale_delay_s", "downscale_delay_s", "look_back_period_s"):
            if getattr(scaling, delay) is not None:
                options["autoscaling_config"][delay] = getattr(scaling, delay)
    return options


def ingress_options(config: AppConfig) -> dict[str, Any]:
    fill = 0
    for model in config.model_configs():
        replica = replica_options(model)
        most_replicas = model.num_replicas or model.autoscaling.max_replicas
        fill += most_replicas * (replica["max_ongoing_requests"] + replica["max_queued_requests"])
    return {
        # tokenizing and relaying text is light; it must never wait for a CPU the engine holds
        "ray_actor_options": {"num_cpus": 0},
        # enough to hand every engine replica its fill, so refusals come from the engines' bounds
        "max_ongoing_requests": max(64, 2 * fill),
    }


def engine_deployment_name(model_name: str, num_models: int) -> str:
    """`EngineReplica` for a one-model app; one deployment per model, named after it, otherwise."""
    return "EngineReplica" if num_models == 1 else f"EngineReplica-{model_name.replace('#', '_')}"


def build_app(args: Union[dict, AppConfig, None] = None) -> Application:
    """The served application for an AppConfig (or its dict form, as in a Serve config file):
    one engine deployment per model (`models`, or the config's one model) behind one ingress."""
    config = args if isinstance(args, AppConfig) else AppConfig.model_validate(args or {})
    models = [resolve_placement(model) for model in config.model_configs()]
    names = [served_model_name(model) for model in models]
    taken: set[str] = set()
    for index, model in enumerate(models):
        for position, name in enumerate(served_model_names(model)):
            if name in taken:
                field = "model_aliases" if position else "model_name"
                raise ValueError(f"models.{index}.{field}: {name!r} is served by an earlier entry too")
            taken.add(name)
    engines = {name: EngineReplica.options(name=engine_deployment_name(name, len(models)),
                                           **replica_options(model)).bind(model.model_dump())
               for name, model in zip(names, models)}
    devices = {name: model.device for name, model in zip(names, models)}  # what each model's replicas run on
    return OpenAIIngress.options(name="OpenAIIngress", **ingress_options(config)).bind(config.model_dump(), engines,
                                                                                       devices)
