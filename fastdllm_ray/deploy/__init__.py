"""Deployment helpers: check deployment files (deployments/*.yaml) and render them into the
objects other launchers take (KubeRay's RayService in k8s/)."""

from fastdllm_ray.deploy.kuberay import KubeOptions, render_k8s, resource_name
from fastdllm_ray.deploy.serve_config import load_serve_config, validate_serve_config

__all__ = ["KubeOptions", "load_serve_config", "render_k8s", "resource_name", "validate_serve_config"]
