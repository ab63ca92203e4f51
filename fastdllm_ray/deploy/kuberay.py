"""Render a deployment file into KubeRay objects: a RayService and a Service for the API.

The RayService's `serveConfigV2` is the deployment file itself (comments dropped), and its
worker group is sized from the app's replica range, so `k8s/<name>.yaml` is a pure function
of `deployments/<name>.yaml`; tests/deploy regenerates it and compares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import ray

from fastdllm_ray.deploy.serve_config import ReplicaShape, builder_apps, replica_shapes
from fastdllm_ray.deploy.yaml_text import dump_yaml
from fastdllm_ray.serve.config import AppConfig

APP_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
HF_CACHE_DIR = "/data/hf-cache"
DEFAULT_SERVE_PORT = 8000  # Serve's default when http_options has no port
METRICS_PORT = 8080  # Ray's Prometheus export port on every node
DASHBOARD_AGENT_PORT = 52365  # serves the raylet health check


@dataclass(frozen=True)
class KubeOptions:
    """What a cluster adds to a deployment file; the defaults render the files in k8s/."""

    name: str
    image: str = "fastdllm-ray:0.1.0"  # built by k8s/Dockerfile
    hf_token_secret: str = "fastdllm-hf-token"  # k8s/hf-token-secret.example.yaml
    hf_cache_claim: str = "fastdllm-hf-cache"  # k8s/hf-cache-pvc.yaml
    gpus_per_pod: int = 1
    head_cpu: str = "2"
    head_memory: str = "8Gi"  # GCS + Serve controller of a multi-GPU cluster
    cpu_head_memory: str = "2Gi"  # the CPU-only (tiny) cluster fits a laptop's kind cluster
    # an 8B checkpoint passes through host memory on load (16 GB in bf16)
    gpu_worker_memory: str = "48Gi"
    cpu_worker_memory: str = "4Gi"
    spare_cpus: int = 2  # the node's Serve proxy and the ingress next to the replicas
    idle_timeout_s: int = 300  # how long an idle GPU pod is kept before scale-down


def resource_name(deployment_name: str) -> str:
    """A DNS-1035 label for KubeRay's generated Services (no dots, lower case)."""
    name = "fastdllm-" + deployment_name.lower().replace(".", "-").replace("_", "-")
    return name[:50]  # KubeRay appends suffixes such as -head-svc and -serve-svc


def render_k8s(config: dict[str, Any], options: KubeOptions) -> list[dict[str, Any]]:
    """Returns [RayService, Service] for a validated deployment config."""
    apps = builder_apps(config)
    if not apps:
        raise ValueError("applications: none uses fastdllm_ray.serve.builder:build_app")
    shapes = [shape for app in apps for shape in replica_shapes(app.get("args") or {})]
    needs_hub = any(model.model is not None for app in apps
                    for model in AppConfig.model_validate(app.get("args") or {}).model_configs())
    port = int((config.get("http_options") or {}).get("port", DEFAULT_SERVE_PORT))
    return [rayservice(config, shapes, needs_hub, port, options), openai_service(port, options)]


def labels(options: KubeOptions, component: str | None = None) -> dict[str, str]:
    found = {APP_LABEL: "fastdllm-ray", INSTANCE_LABEL: options.name}
    return found | {COMPONENT_LABEL: component} if component else found


def rayservice(config: dict[str, Any], shapes: list[ReplicaShape], needs_hub: bool, port: int,
               options: KubeOptions) -> dict[str, Any]:
    uses_gpus = any(shape.uses_gpus for shape in shapes)
    min_pods = sum(shape.pods(shape.min_replicas, options.gpus_per_pod) for shape in shapes)
    max_pods = sum(shape.pods(shape.max_replicas, options.gpus_per_pod) for shape in shapes)
    worker_cpus = max(math.ceil(shape.cpus_per_replica * shape.replicas_per_pod(options.gpus_per_pod))
                      for shape in shapes) + options.spare_cpus
    worker_resources = {"cpu": str(worker_cpus),
                        "memory": options.gpu_worker_memory if uses_gpus else options.cpu_worker_memory}
    if uses_gpus:
        worker_resources["nvidia.com/gpu"] = str(options.gpus_per_pod)
    worker_group = {
        "groupName": "gpu-workers" if uses_gpus else "cpu-workers",
        "replicas": min_pods,
        "minReplicas": min_pods,
        "maxReplicas": max_pods,
        "rayStartParams": {},
        "template": pod_template(options, "ray-worker", worker_resources, needs_hub, port,
                                 worker_probe(port), gpu=uses_gpus),
    }
    head_resources = {"cpu": options.head_cpu,
                      "memory": options.head_memory if uses_gpus else options.cpu_head_memory}
    head_group = {
        # no replicas on the head: it keeps the GCS and the Serve controller responsive
        "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
        "template": pod_template(options, "ray-head", head_resources, needs_hub, port,
                                 head_probe(), gpu=False),
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": options.name, "labels": labels(options)},
        "spec": {
            "serveConfigV2": serve_config_text(config),
            "rayClusterConfig": {
                "rayVersion": ray.__version__,
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {"upscalingMode": "Default",
                                      "idleTimeoutSeconds": options.idle_timeout_s},
                "headGroupSpec": head_group,
                "workerGroupSpecs": [worker_group],
            },
        },
    }


def pod_template(options: KubeOptions, container: str, resources: dict[str, str], needs_hub: bool,
                 port: int, readiness: dict[str, Any], gpu: bool) -> dict[str, Any]:
    ports = [{"name": "serve", "containerPort": port},
             {"name": "metrics", "containerPort": METRICS_PORT}]
    if container == "ray-head":
        ports = [{"name": "gcs", "containerPort": 6379},
                 {"name": "dashboard", "containerPort": 8265},
                 {"name": "client", "containerPort": 10001}] + ports
    spec: dict[str, Any] = {
        "name": container,
        "image": options.image,
        "ports": ports,
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "readinessProbe": readiness,
        "env": [{"name": "TOKENIZERS_PARALLELISM", "value": "false"}],
    }
    pod: dict[str, Any] = {"containers": [spec]}
    if needs_hub:
        spec["env"] += [
            {"name": "HF_HOME", "value": HF_CACHE_DIR},
            # optional: public checkpoints load without it, gated ones need it
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
                "name": options.hf_token_secret, "key": "HF_TOKEN", "optional": True}}},
        ]
        spec["volumeMounts"] = [{"name": "hf-cache", "mountPath": HF_CACHE_DIR}]
        pod["volumes"] = [{"name": "hf-cache", "persistentVolumeClaim": {"claimName": options.hf_cache_claim}}]
        pod["securityContext"] = {"fsGroup": 100}  # the ray image's user is in group 100
    if gpu:
        # GPU node pools are usually tainted so that only GPU work lands there
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    component = "head" if container == "ray-head" else "worker"
    return {"metadata": {"labels": labels(options, component)}, "spec": pod}


def head_probe() -> dict[str, Any]:
    # the head is ready when its raylet is; the app may deploy long after (weights download)
    return {"httpGet": {"path": "/api/local_raylet_healthz", "port": DASHBOARD_AGENT_PORT},
            "initialDelaySeconds": 10, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 10}


def worker_probe(port: int) -> dict[str, Any]:
    # The app's /health through this pod's Serve proxy: ready once the proxy is up *and* this
    # cluster's app answers. Serve's own /-/healthz is up before the app is, so during an
    # upgrade the new cluster's pods would take traffic they can only answer 404/503.
    return {"httpGet": {"path": "/health", "port": port},
            "initialDelaySeconds": 10, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 10}


def openai_service(port: int, options: KubeOptions) -> dict[str, Any]:
    """A stable name for the OpenAI API in front of the ready worker pods.

    Workers only: the head must turn ready before the app deploys (KubeRay waits for it),
    so its readiness cannot say that the app answers."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": options.name + "-openai", "labels": labels(options)},
        "spec": {
            "type": "ClusterIP",
            "selector": {INSTANCE_LABEL: options.name, COMPONENT_LABEL: "worker"},
            "ports": [{"name": "openai", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


def serve_config_text(config: dict[str, Any]) -> str:
    return dump_yaml(config)
