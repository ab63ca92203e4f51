"""Load a deployment file (deployments/*.yaml) and check it the way Ray Serve will.

A deployment file is a Ray Serve config (`serve run` / `serve deploy` format). Checking it
here, before a cluster sees it, means a typo in `args` fails on the operator's laptop with
the field named instead of as a replica crash loop on a GPU node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fastdllm_ray.serve.config import AppConfig

BUILDER_IMPORT_PATH = "fastdllm_ray.serve.builder:build_app"


def load_serve_config(path: str | Path) -> dict[str, Any]:
    """Parses and validates a deployment file; returns it as a plain dict.

    Raises ValueError naming the file and the field when Ray Serve's own schema
    (`ServeDeploySchema`) or our `AppConfig` rejects it.
    """
    text = Path(path).read_text()
    config = yaml.safe_load(text)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a YAML mapping")
    validate_serve_config(config, source=str(path))
    return config


def validate_serve_config(config: dict[str, Any], source: str = "config") -> None:
    """Raises ValueError when `config` is not a Serve config whose apps we can build."""
    # Imported here so that rendering helpers stay importable without Serve's extras.
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    try:
        ServeDeploySchema.model_validate(config)
    except ValidationError as exc:
        raise ValueError(f"{source}: not a Ray Serve config: {exc}") from exc
    for index, app in enumerate(config["applications"]):
        if app.get("import_path") != BUILDER_IMPORT_PATH:
            continue  # someone else's app sharing the cluster: Serve checks it
        try:
            AppConfig.model_validate(app.get("args") or {})
        except ValidationError as exc:
            raise ValueError(f"{source}: applications[{index}].args: {exc}") from exc


@dataclass(frozen=True)
class ReplicaShape:
    """What one app asks of the cluster: replicas and the resources of each."""

    min_replicas: int
    max_replicas: int
    gpus_per_replica: float
    cpus_per_replica: float

    @property
    def uses_gpus(self) -> bool:
        return self.gpus_per_replica > 0

    def replicas_per_pod(self, gpus_per_pod: int) -> int:
        """Replicas one worker pod holds: as many as its GPUs fit, else one."""
        if not self.uses_gpus:
            return 1
        return max(1, math.floor(gpus_per_pod / self.gpus_per_replica))

    def pods(self, replicas: int, gpus_per_pod: int) -> int:
        """Worker pods needed to host `replicas` replicas."""
        return math.ceil(replicas / self.replicas_per_pod(gpus_per_pod))


def replica_shape(app_args: dict[str, Any]) -> ReplicaShape:
    """Reads the replica count range and per-replica resources out of a one-model app's `args`."""
    return _shape(AppConfig.model_validate(app_args or {}))


def replica_shapes(app_args: dict[str, Any]) -> list[ReplicaShape]:
    """One ReplicaShape per model the app serves: its `models` entries, or its one model."""
    return [_shape(model) for model in AppConfig.model_validate(app_args or {}).model_configs()]


def _shape(cfg: AppConfig) -> ReplicaShape:
    gpus = cfg.num_gpus_per_replica
    if gpus is None:
        gpus = 1.0 if cfg.device == "cuda" else 0.0  # the builder's own default
    if cfg.num_replicas is not None:
        low = high = cfg.num_replicas
    else:
        low, high = cfg.autoscaling.min_replicas, cfg.autoscaling.max_replicas
    return ReplicaShape(low, high, float(gpus), float(cfg.num_cpus_per_replica))


def builder_apps(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The applications of `config` that our builder builds."""
    return [app for app in config["applications"] if app.get("import_path") == BUILDER_IMPORT_PATH]
