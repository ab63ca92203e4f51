"""build_app: AppConfig -> a Ray Serve application (ingress -> engine replicas).

`import_path: fastdllm_ray.serve.builder:build_app` with the AppConfig as `args` in a Serve
config file, the `fastdllm-ray serve` CLI and the KubeRay RayService all come through here.
"""

from __future__ import annotations

from typing import Any, Union

from ray.serve import Application

from fastdllm_ray.serve.config import AppConfig
from fastdllm_ray.serve.ingress import OpenAIIngress
from fastdllm_ray.serve.replica import EngineReplica

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
    }
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
    return options


def ingress_options(config: AppConfig) -> dict[str, Any]:
    replica = replica_options(config)
    most_replicas = config.num_replicas or config.autoscaling.max_replicas
    per_replica = replica["max_ongoing_requests"] + replica["max_queued_requests"]
    return {
        # tokenizing and relaying text is light; it must never wait for a CPU the engine holds
        "ray_actor_options": {"num_cpus": 0},
        # enough to hand every engine replica its fill, so refusals come from the engines' bounds
        "max_ongoing_requests": max(64, 2 * most_replicas * per_replica),
    }


def build_app(args: Union[dict, AppConfig, None] = None) -> Application:
    """The served application for an AppConfig (or its dict form, as in a Serve config file)."""
    config = args if isinstance(args, AppConfig) else AppConfig.model_validate(args or {})
    config = resolve_placement(config)
    as_dict = config.model_dump()
    engine = EngineReplica.options(name="EngineReplica", **replica_options(config)).bind(as_dict)
    return OpenAIIngress.options(name="OpenAIIngress", **ingress_options(config)).bind(as_dict, engine)
